//! Compiled kernels, cached under an explicit key: the shader family, the entry point and the
//! specialisation values substituted into the WGSL (`{{NAME}}` placeholders; WGSL override
//! constants cannot size private arrays, which the register-blocked kernels need). Also the
//! one launch helper every op uses, so bind-group and uniform handling live in one place.
//! `INTERVENE_DUMP_WGSL=1` prints each final shader text to stderr when it is compiled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use super::device::Gpu;
use super::dispatch::{grid, groups_for};
use super::{GpuError, GpuResult};

/// A kernel family: one `.wgsl` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shader {
    Matmul,
    MatmulVec4,
    MatmulTiled,
    Rmsnorm,
    Rope,
    Attention,
    Swiglu,
    Embedding,
    Elementwise,
    Reduce,
    Xtx,
    LinearBackward,
    RmsnormBackward,
    AttentionBackward,
    SwigluBackward,
    EmbeddingBackward,
    CrossEntropy,
    Mse,
    Quant,
    Gptq,
    Sparsegpt,
    Mask,
}

impl Shader {
    fn source(self) -> &'static str {
        match self {
            Shader::Matmul => concat!(
                include_str!("../../../shaders/matmul.wgsl"),
                include_str!("../../../shaders/linear_common.wgsl")
            ),
            Shader::MatmulVec4 => concat!(
                include_str!("../../../shaders/matmul_vec4.wgsl"),
                include_str!("../../../shaders/linear_common.wgsl")
            ),
            Shader::MatmulTiled => concat!(
                include_str!("../../../shaders/matmul_tiled.wgsl"),
                include_str!("../../../shaders/linear_common.wgsl")
            ),
            Shader::Rmsnorm => include_str!("../../../shaders/rmsnorm.wgsl"),
            Shader::Rope => include_str!("../../../shaders/rope.wgsl"),
            Shader::Attention => include_str!("../../../shaders/attention.wgsl"),
            Shader::Swiglu => include_str!("../../../shaders/swiglu.wgsl"),
            Shader::Embedding => include_str!("../../../shaders/embedding.wgsl"),
            Shader::Elementwise => include_str!("../../../shaders/elementwise.wgsl"),
            Shader::Reduce => include_str!("../../../shaders/reduce.wgsl"),
            Shader::Xtx => include_str!("../../../shaders/xtx.wgsl"),
            Shader::LinearBackward => include_str!("../../../shaders/linear_backward.wgsl"),
            Shader::RmsnormBackward => include_str!("../../../shaders/rmsnorm_backward.wgsl"),
            Shader::AttentionBackward => {
                include_str!("../../../shaders/attention_backward.wgsl")
            }
            Shader::SwigluBackward => include_str!("../../../shaders/swiglu_backward.wgsl"),
            Shader::EmbeddingBackward => {
                include_str!("../../../shaders/embedding_backward.wgsl")
            }
            Shader::CrossEntropy => include_str!("../../../shaders/cross_entropy.wgsl"),
            Shader::Mse => include_str!("../../../shaders/mse.wgsl"),
            Shader::Quant => concat!(
                include_str!("../../../shaders/quant.wgsl"),
                include_str!("../../../shaders/quant_common.wgsl")
            ),
            Shader::Gptq => concat!(
                include_str!("../../../shaders/gptq.wgsl"),
                include_str!("../../../shaders/obs_update.wgsl"),
                include_str!("../../../shaders/quant_common.wgsl")
            ),
            Shader::Sparsegpt => concat!(
                include_str!("../../../shaders/sparsegpt.wgsl"),
                include_str!("../../../shaders/obs_update.wgsl"),
                include_str!("../../../shaders/quant_common.wgsl")
            ),
            Shader::Mask => include_str!("../../../shaders/mask.wgsl"),
        }
    }
}

/// What makes two compiled kernels different.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelKey {
    pub shader: Shader,
    pub entry: &'static str,
    /// `{{NAME}}` -> value; every kernel has at least `WG`, its workgroup size.
    pub subs: Vec<(&'static str, u32)>,
}

#[derive(Default)]
pub struct PipelineCache {
    map: Mutex<HashMap<KernelKey, Arc<wgpu::ComputePipeline>>>,
}

/// Expands `//#unroll NAME COUNT` ... `//#end` blocks (nestable): the lines between are
/// repeated COUNT times with `$NAME` replaced by 0, 1, ... Register-blocked kernels need their
/// accumulators as distinct variables: a private array indexed inside a loop is kept in
/// (per-lane, gathered) memory by drivers that do not fully unroll the loop, llvmpipe among
/// them.
fn unroll(src: &str) -> Result<String, String> {
    fn block<'a>(
        lines: &mut std::iter::Peekable<impl Iterator<Item = &'a str>>,
        out: &mut Vec<String>,
        nested: bool,
    ) -> Result<(), String> {
        while let Some(line) = lines.next() {
            let t = line.trim_start();
            if t.starts_with("//#end") {
                return if nested {
                    Ok(())
                } else {
                    Err("`//#end` without `//#unroll`".into())
                };
            }
            if let Some(rest) = t.strip_prefix("//#unroll ") {
                let mut it = rest.split_whitespace();
                let (Some(name), Some(count)) = (it.next(), it.next()) else {
                    return Err(format!("malformed `{t}`"));
                };
                let count: u32 = count
                    .parse()
                    .map_err(|_| format!("`{t}`: count is not a number"))?;
                let mut body = Vec::new();
                block(lines, &mut body, true)?;
                let var = format!("${name}");
                for i in 0..count {
                    out.extend(body.iter().map(|l| l.replace(&var, &i.to_string())));
                }
                continue;
            }
            out.push(line.to_string());
        }
        if nested {
            Err("`//#unroll` without `//#end`".into())
        } else {
            Ok(())
        }
    }
    let mut out = Vec::new();
    block(&mut src.lines().peekable(), &mut out, false)?;
    Ok(out.join("\n"))
}

/// The shader text with its placeholders filled in and its unroll blocks expanded.
fn specialise(key: &KernelKey) -> GpuResult<String> {
    let mut src = key.shader.source().to_string();
    for (name, value) in &key.subs {
        src = src.replace(&format!("{{{{{name}}}}}"), &value.to_string());
    }
    if src.contains("//#unroll") {
        src = unroll(&src)
            .map_err(|e| GpuError::shape("pipeline", format!("{:?}: {e}", key.shader)))?;
    }
    if let Some(at) = src.find("{{") {
        let end = src[at..].find("}}").map_or(src.len(), |e| at + e + 2);
        return Err(GpuError::shape(
            "pipeline",
            format!(
                "{:?} has an unfilled placeholder {}",
                key.shader,
                &src[at..end]
            ),
        ));
    }
    Ok(src)
}

impl Gpu {
    /// The pipeline for `key`, compiled on first use.
    pub(crate) fn pipeline(&self, key: &KernelKey) -> GpuResult<Arc<wgpu::ComputePipeline>> {
        // A poisoned lock only means another thread panicked mid-insert; the map is still valid.
        let mut map = self.pipelines.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = map.get(key) {
            return Ok(p.clone());
        }
        let src = specialise(key)?;
        if std::env::var_os("INTERVENE_DUMP_WGSL").is_some() {
            eprintln!("// ---- {key:?}\n{src}");
        }
        let pipeline = self.scoped("pipeline", || {
            let desc = wgpu::ShaderModuleDescriptor {
                label: Some(key.entry),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            };
            // naga otherwise adds a countdown to every loop in case it never ends, which
            // costs registers and blocks unrolling in the matmul's K loop; every loop in
            // shaders/ runs over a bound taken from its parameters. Bounds checks on buffer
            // accesses stay (`INTERVENE_GPU_LOOP_BOUNDING=1` restores the countdown, to compare).
            let mut checks = wgpu::ShaderRuntimeChecks::checked();
            checks.force_loop_bounding =
                std::env::var_os("INTERVENE_GPU_LOOP_BOUNDING").is_some_and(|v| v == "1");
            // SAFETY: `force_loop_bounding = false` requires that no shader loops forever:
            // every loop in shaders/ counts up to a bound read from its uniform parameters or
            // a constant, and the bounds are checked on the host before dispatch.
            let module = unsafe { self.device.create_shader_module_trusted(desc, checks) };
            self.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(key.entry),
                    layout: None,
                    module: &module,
                    entry_point: Some(key.entry),
                    compilation_options: Default::default(),
                    cache: None,
                })
        })?;
        let p = Arc::new(pipeline);
        map.insert(key.clone(), p.clone());
        Ok(p)
    }

    /// Runs `key` over `invocations` work items (`per_group` per workgroup): `buffers` are
    /// bound at 0..n in order, and `meta` (the op's uniform struct as bytes) at n.
    pub(crate) fn launch(
        &self,
        op: &'static str,
        key: &KernelKey,
        buffers: &[&wgpu::Buffer],
        meta: &[u8],
        workgroups: u64,
    ) -> GpuResult<()> {
        let bound: Vec<(u32, &wgpu::Buffer)> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| (i as u32, *b))
            .collect();
        self.launch_bound(op, key, &bound, buffers.len() as u32, meta, workgroups)
    }

    /// As `launch`, with explicit binding numbers: for a shader file whose entry points each
    /// use a different subset of its bindings (the automatic layout of an entry holds only the
    /// bindings it uses, so only those may be bound).
    pub(crate) fn launch_bound(
        &self,
        op: &'static str,
        key: &KernelKey,
        buffers: &[(u32, &wgpu::Buffer)],
        meta_binding: u32,
        meta: &[u8],
        workgroups: u64,
    ) -> GpuResult<()> {
        if workgroups == 0 {
            return Ok(());
        }
        let g = grid(
            workgroups,
            self.limits().max_compute_workgroups_per_dimension,
        )?;
        let pipeline = self.pipeline(key)?;
        self.scoped(op, || {
            let uniform = self
                .device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(op),
                    contents: meta,
                    usage: wgpu::BufferUsages::UNIFORM,
                });
            let mut entries: Vec<wgpu::BindGroupEntry> = buffers
                .iter()
                .map(|&(i, b)| wgpu::BindGroupEntry {
                    binding: i,
                    resource: b.as_entire_binding(),
                })
                .collect();
            entries.push(wgpu::BindGroupEntry {
                binding: meta_binding,
                resource: uniform.as_entire_binding(),
            });
            let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(op),
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            });
            let mut enc = self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(op) });
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(op),
                    timestamp_writes: None,
                });
                pass.set_pipeline(&pipeline);
                pass.set_bind_group(0, &bind, &[]);
                pass.dispatch_workgroups(g.x, g.y, g.z);
            }
            self.queue.submit([enc.finish()]);
        })
    }
}

/// Workgroups for `items` invocations with workgroup size `wg` (re-exported for ops).
pub(crate) fn groups(items: usize, wg: u32) -> u64 {
    groups_for(items as u64, wg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unroll_repeats_nested_blocks_and_rejects_unbalanced_ones() {
        let src = "a\n//#unroll I 2\nx$I\n  //#unroll J 3\n  y$I_$J\n  //#end\n//#end\nb";
        assert_eq!(
            unroll(src).unwrap(),
            "a\nx0\n  y0_0\n  y0_1\n  y0_2\nx1\n  y1_0\n  y1_1\n  y1_2\nb"
        );
        assert_eq!(unroll("//#unroll I 0\nx$I\n//#end").unwrap(), "");
        assert!(unroll("//#unroll I 2\nx").is_err());
        assert!(unroll("x\n//#end").is_err());
        assert!(unroll("//#unroll I two\nx\n//#end").is_err());
    }

    #[test]
    fn specialise_fills_and_rejects_missing_placeholders() {
        let key = KernelKey {
            shader: Shader::Elementwise,
            entry: "add",
            subs: vec![("WG", 64)],
        };
        let src = specialise(&key).unwrap();
        assert!(src.contains("@workgroup_size(64)") && !src.contains("{{"));
        let bad = KernelKey {
            shader: Shader::Elementwise,
            entry: "add",
            subs: vec![],
        };
        assert!(specialise(&bad).unwrap_err().to_string().contains("{{WG}}"));
    }
}
