//! Adapter selection and device setup. Backends are restricted to Vulkan, Metal and DX12: with
//! GL enabled, wgpu silently falls back to it when Vulkan is missing, and a CI that meant to
//! test lavapipe would pass on something else. The device is opened with the adapter's own
//! limits, since WebGPU's defaults cap buffers at 256 MiB.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::pipeline::PipelineCache;
use super::{GpuError, GpuResult};

/// Which adapters are acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterPolicy {
    /// A hardware adapter only (`--device auto`): a software rasteriser such as lavapipe is
    /// about 10x slower than the CPU backend on the same cores, so it must not be chosen
    /// behind the user's back.
    RealOnly,
    /// Any adapter, software included (`--device gpu`, tests, benchmarks).
    Any,
}

/// Workgroup and tile sizes, chosen per adapter: the shapes that run fast on a software
/// rasteriser (big per-invocation blocks, tiny workgroups) are not the ones that run fast on
/// hardware, so neither is baked into the shaders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Matmul: invocations per workgroup, then output rows and columns per invocation.
    pub mm_wg: u32,
    pub mm_tm: u32,
    pub mm_tn: u32,
    /// Output rows and columns per invocation of the vec4 register kernel
    /// (`shaders/matmul_vec4.wgsl`), which runs where K % 4 == 0 and no tile is used.
    pub mm4_tm: u32,
    pub mm4_tn: u32,
    /// Invocations per workgroup for elementwise kernels and row reductions.
    pub wg: u32,
    /// The workgroup-memory tiled matmul (`shaders/matmul_tiled.wgsl`) where the adapter is
    /// a hardware GPU; `None` keeps the register-blocked kernel for every product.
    pub mm_tile: Option<MatmulTile>,
    /// A product whose output gives fewer workgroups than this runs on a smaller tile
    /// ([`MatmulTile::fitted`]), so small products still fill the card; 0 never shrinks.
    pub mm_min_groups: usize,
}

/// Shape of the tiled matmul: a workgroup computes a `bm x bn` tile of the output, stepping
/// through K `bk` columns at a time, each invocation a `tm x tn` block of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MatmulTile {
    pub bm: u32,
    pub bn: u32,
    pub bk: u32,
    pub tm: u32,
    pub tn: u32,
}

impl MatmulTile {
    /// Invocations per workgroup.
    pub fn threads(&self) -> u32 {
        (self.bm / self.tm) * (self.bn / self.tn)
    }

    /// Whether the shader can be built from this shape: blocks in whole vec4s that divide the
    /// tile, a K step in whole vec4s, every invocation staging the same number of vec4s, and
    /// a workgroup within `max_threads` invocations and `max_shared` bytes.
    pub fn is_valid(&self, max_threads: u32, max_shared: u32) -> bool {
        let MatmulTile { bm, bn, bk, tm, tn } = *self;
        let blocks = [bm, bn, bk, tm, tn].iter().all(|&v| v >= 4 && v % 4 == 0)
            && bm % tm == 0
            && bn % tn == 0
            && tm <= 16
            && tn <= 16
            && bm <= 256
            && bn <= 256
            && bk <= 64;
        if !blocks {
            return false;
        }
        let threads = self.threads();
        let shared = u64::from(bk) * u64::from(bm + bn) * 4;
        threads <= max_threads
            && shared <= u64::from(max_shared)
            && (bm * bk / 4) % threads == 0
            && (bn * bk / 4) % threads == 0
    }

    /// The tile for an `m x n` output: this one, or if it gives fewer than `min_groups`
    /// workgroups, the next smaller one (the wider side and its block halved, the invocation
    /// count kept) while that is still a valid shape. Every output element sums its products
    /// in the same order whatever the tile, so the choice does not change a bit of the result.
    pub fn fitted(
        self,
        m: usize,
        n: usize,
        min_groups: usize,
        max_threads: u32,
        max_shared: u32,
    ) -> MatmulTile {
        let mut t = self;
        loop {
            let groups = m.div_ceil(t.bm as usize) * n.div_ceil(t.bn as usize);
            if groups >= min_groups {
                return t;
            }
            let smaller = if t.bn >= t.bm {
                MatmulTile {
                    bn: t.bn / 2,
                    tn: t.tn / 2,
                    ..t
                }
            } else {
                MatmulTile {
                    bm: t.bm / 2,
                    tm: t.tm / 2,
                    ..t
                }
            };
            if !smaller.is_valid(max_threads, max_shared) {
                return t;
            }
            t = smaller;
        }
    }

    /// `bm,bn,bk,tm,tn`, as `INTERVENE_GPU_TILE` takes it.
    pub fn parse(s: &str) -> Option<MatmulTile> {
        let v = u32_list(s)?;
        let [bm, bn, bk, tm, tn] = v[..] else {
            return None;
        };
        Some(MatmulTile { bm, bn, bk, tm, tn })
    }
}

/// A comma-separated list of counts ("128, 64,16"); `None` if any entry is not one.
fn u32_list(s: &str) -> Option<Vec<u32>> {
    s.split(',').map(|p| p.trim().parse().ok()).collect()
}

impl Tuning {
    fn for_adapter(kind: wgpu::DeviceType, limits: &wgpu::Limits) -> Tuning {
        let mut t = match kind {
            // llvmpipe runs 8 invocations per SIMD vector and turns every per-lane load into
            // a gather: large register blocks and one-vector workgroups win there
            // (../shared/reference/wgpu-on-cpu.md, section 3; 16 x 16 measured fastest of
            // 4x4, 8x8, 16x8 and 16x16 in bench/RESULTS.md).
            wgpu::DeviceType::Cpu => Tuning {
                mm_wg: 8,
                mm_tm: 16,
                mm_tn: 16,
                // vec4 loads quarter the gathers, and a 32 x 32 block (spilled, but each
                // loaded vec4 feeds 32 dot products) ran fastest of 16x16 to 64x32 on a
                // 2-core EPYC: 30-35 GFLOP/s against 26-28 for 16 x 16 (bench/RESULTS.md).
                mm4_tm: 32,
                mm4_tn: 32,
                wg: 64,
                // Workgroup memory only adds barriers there (wgpu-on-cpu.md, section 3).
                mm_tile: None,
                mm_min_groups: 0,
            },
            _ => Tuning {
                mm_wg: 64,
                mm_tm: 4,
                mm_tn: 4,
                mm4_tm: 4,
                mm4_tn: 4,
                wg: 256,
                mm_tile: Some(MatmulTile {
                    bm: 128,
                    bn: 128,
                    bk: 16,
                    tm: 8,
                    tn: 8,
                }),
                // On the H200 (132 SMs), 1024^3 and the SmolLM2 MLP products ran fastest on
                // the largest tile giving about 128 workgroups or more (bench/RESULTS.md).
                mm_min_groups: 128,
            },
        };
        // `INTERVENE_GPU_MATMUL=wg,tm,tn` overrides the matmul shape, for tuning on a new card.
        if let Ok(s) = std::env::var("INTERVENE_GPU_MATMUL") {
            let v: Vec<u32> = s.split(',').filter_map(|p| p.trim().parse().ok()).collect();
            if let [wg, tm, tn] = v[..] {
                if (1..=256).contains(&wg) && (1..=16).contains(&tm) && (1..=16).contains(&tn) {
                    t.mm_wg = wg;
                    t.mm_tm = tm;
                    t.mm_tn = tn;
                }
            }
        }
        // `INTERVENE_GPU_MATMUL4=tm,tn` overrides the vec4 register kernel's block.
        if let Ok(s) = std::env::var("INTERVENE_GPU_MATMUL4") {
            match u32_list(&s).as_deref() {
                Some(&[tm, tn]) if (1..=64).contains(&tm) && (1..=64).contains(&tn) => {
                    t.mm4_tm = tm;
                    t.mm4_tn = tn;
                }
                _ => eprintln!("note: INTERVENE_GPU_MATMUL4={s:?} is not tm,tn in 1..=64; ignored"),
            }
        }
        // `INTERVENE_GPU_TILE=bm,bn,bk,tm,tn` (or `off`) overrides the tiled matmul.
        if let Ok(s) = std::env::var("INTERVENE_GPU_TILE") {
            if s.trim() == "off" {
                t.mm_tile = None;
            } else if let Some(tile) = MatmulTile::parse(&s) {
                t.mm_tile = Some(tile);
            } else {
                eprintln!("note: INTERVENE_GPU_TILE={s:?} is not bm,bn,bk,tm,tn; ignored");
            }
        }
        if let Ok(s) = std::env::var("INTERVENE_GPU_TILE_MIN_GROUPS") {
            match s.trim().parse() {
                Ok(v) => t.mm_min_groups = v,
                Err(_) => {
                    eprintln!("note: INTERVENE_GPU_TILE_MIN_GROUPS={s:?} is not a count; ignored")
                }
            }
        }
        let (threads, shared) = (
            limits.max_compute_invocations_per_workgroup,
            limits.max_compute_workgroup_storage_size,
        );
        if let Some(tile) = t.mm_tile.filter(|tile| !tile.is_valid(threads, shared)) {
            eprintln!(
                "note: matmul tile {tile:?} does not fit this adapter ({threads} invocations, \
                 {shared} bytes of workgroup memory); using the register-blocked kernel"
            );
            t.mm_tile = None;
        }
        t
    }
}

/// An open device with its queue, limits, tuning and pipeline cache.
pub struct Gpu {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    limits: wgpu::Limits,
    pub(crate) tuning: Tuning,
    pub(crate) pipelines: PipelineCache,
    /// Largest byte size of one buffer chunk: the smaller of the binding and buffer limits,
    /// lowered by tests so that chunking runs on small tensors.
    chunk_bytes: AtomicU64,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gpu({})", self.describe())
    }
}

/// Ranks adapter types: hardware first, discrete before integrated; software last.
fn rank(kind: wgpu::DeviceType) -> u8 {
    match kind {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

impl Gpu {
    /// Opens the best adapter the policy allows.
    pub fn new(policy: AdapterPolicy) -> GpuResult<Gpu> {
        let backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends;
        let instance = wgpu::Instance::new(desc);
        let mut adapters = pollster::block_on(instance.enumerate_adapters(backends));
        let seen: Vec<String> = adapters
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{} ({:?}, {:?})", i.name, i.device_type, i.backend)
            })
            .collect();
        adapters.retain(|a| {
            policy == AdapterPolicy::Any || a.get_info().device_type != wgpu::DeviceType::Cpu
        });
        adapters.sort_by_key(|a| rank(a.get_info().device_type));
        let Some(adapter) = adapters.into_iter().next() else {
            return Err(GpuError::NoAdapter(if seen.is_empty() {
                "no Vulkan, Metal or DX12 adapter found (on Debian, `apt-get install \
                 mesa-vulkan-drivers libvulkan1` provides a software one)"
                    .into()
            } else {
                format!(
                    "only software adapters found ({}); --device gpu accepts them",
                    seen.join(", ")
                )
            }));
        };
        let info = adapter.get_info();
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("intervene"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| GpuError::Device {
            adapter: info.name.clone(),
            msg: e.to_string(),
        })?;
        // wgpu's default handler panics on errors raised outside an error scope; every op runs
        // inside one (`Gpu::scoped`), so anything reaching here is logged, not fatal.
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| eprintln!("wgpu: {e}")));
        let chunk_bytes = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        Ok(Gpu {
            tuning: Tuning::for_adapter(info.device_type, &limits),
            pipelines: PipelineCache::default(),
            device,
            queue,
            info,
            limits,
            chunk_bytes: AtomicU64::new(chunk_bytes),
        })
    }

    /// `name (type, backend)`, for notes and provenance.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?})",
            self.info.name, self.info.device_type, self.info.backend
        )
    }

    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    pub fn tuning(&self) -> Tuning {
        self.tuning
    }

    /// Whether the adapter is a software rasteriser.
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Lowers the chunk size (tests: exercise chunking on small tensors).
    /// Tensors uploaded afterwards use the new size; existing ones keep their chunks.
    pub fn set_chunk_bytes(&self, bytes: u64) {
        self.chunk_bytes
            .store(bytes.clamp(4, self.max_chunk_bytes()), Ordering::Relaxed);
    }

    /// The adapter's own chunk bound: the smaller of the binding and buffer limits.
    pub fn max_chunk_bytes(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    pub(crate) fn chunk_bytes(&self) -> u64 {
        self.chunk_bytes.load(Ordering::Relaxed)
    }

    /// Runs `f` inside validation and out-of-memory error scopes, turning what wgpu reports
    /// into an error for `op` instead of a panic.
    pub(crate) fn scoped<T>(&self, op: &'static str, f: impl FnOnce() -> T) -> GpuResult<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let v = pollster::block_on(val.pop());
        let o = pollster::block_on(oom.pop());
        match v.or(o) {
            Some(e) => Err(GpuError::Wgpu {
                op,
                msg: e.to_string(),
            }),
            None => Ok(out),
        }
    }

    /// Blocks until all submitted work has finished.
    pub fn sync(&self) -> GpuResult<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(|_| ())
            .map_err(|e| GpuError::Wgpu {
                op: "sync",
                msg: e.to_string(),
            })
    }
}
