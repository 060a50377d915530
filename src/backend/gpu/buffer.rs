//! Device tensors: upload, download, and splitting into row chunks. One storage binding is
//! capped by `max_storage_buffer_binding_size` (128 MiB on lavapipe) and one buffer by
//! `max_buffer_size`; a 128k x 4096 f32 embedding (2 GiB) exceeds both, so a tensor is stored
//! as whole-row chunks, each within both limits. Ops that read a chunked operand (embedding
//! gather, the LM head's weight) dispatch once per chunk; the rest require one chunk.

use super::device::Gpu;
use super::{GpuError, GpuResult};

/// One buffer holding rows `row0..row0 + rows` of the tensor.
#[derive(Debug)]
pub struct Chunk {
    pub(crate) buf: wgpu::Buffer,
    pub(crate) row0: usize,
    pub(crate) rows: usize,
}

/// A row-major f32 tensor on the device.
#[derive(Debug)]
pub struct GpuTensor {
    shape: Vec<usize>,
    pub(crate) chunks: Vec<Chunk>,
}

const F32: u64 = 4;

impl GpuTensor {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The last dimension (1 for a scalar).
    pub fn cols(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// Rows of the matrix view: the product of the leading dimensions (so a `[N, 0]` weight
    /// still has N rows).
    pub fn rows(&self) -> usize {
        match self.shape.split_last() {
            Some((_, lead)) => lead.iter().product(),
            None => 1,
        }
    }

    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// The single buffer of an unchunked tensor; `op` names the caller in the error.
    pub(crate) fn single(&self, op: &'static str, what: &str) -> GpuResult<&wgpu::Buffer> {
        match &self.chunks[..] {
            [c] => Ok(&c.buf),
            _ => Err(GpuError::shape(
                op,
                format!(
                    "{what} {:?} spans {} buffers (larger than one binding); {op} needs it in one",
                    self.shape,
                    self.chunks.len()
                ),
            )),
        }
    }

    /// Rows per chunk for a tensor of row length `cols` under `gpu`'s chunk limit.
    fn rows_per_chunk(gpu: &Gpu, cols: usize) -> GpuResult<usize> {
        let row_bytes = (cols as u64).max(1) * F32;
        let rows = gpu.chunk_bytes() / row_bytes;
        if rows == 0 {
            return Err(GpuError::shape(
                "upload",
                format!(
                    "one row of {cols} f32 exceeds the adapter's {} byte binding limit",
                    gpu.chunk_bytes()
                ),
            ));
        }
        Ok(usize::try_from(rows).unwrap_or(usize::MAX))
    }

    /// A zero-filled tensor.
    pub fn zeros(gpu: &Gpu, shape: &[usize]) -> GpuResult<GpuTensor> {
        Self::alloc(gpu, shape, None)
    }

    /// Copies `data` (row-major, matching `shape`) to the device.
    pub fn upload(gpu: &Gpu, shape: &[usize], data: &[f32]) -> GpuResult<GpuTensor> {
        Self::alloc(gpu, shape, Some(data))
    }

    /// Copies a CPU tensor to the device.
    pub fn from_tensor(gpu: &Gpu, t: &crate::backend::Tensor) -> GpuResult<GpuTensor> {
        Self::upload(gpu, t.shape(), t.data())
    }

    fn alloc(gpu: &Gpu, shape: &[usize], data: Option<&[f32]>) -> GpuResult<GpuTensor> {
        let numel = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| GpuError::shape("upload", format!("shape {shape:?} overflows")))?;
        if let Some(d) = data {
            if d.len() != numel {
                return Err(GpuError::shape(
                    "upload",
                    format!("{} values for shape {shape:?}", d.len()),
                ));
            }
        }
        let cols = shape.last().copied().unwrap_or(1);
        // Leading dims, so a `[N, 0]` tensor keeps its N (empty) rows.
        let rows: usize = shape.split_last().map_or(1, |(_, l)| l.iter().product());
        let per = Self::rows_per_chunk(gpu, cols)?;
        let mut chunks = Vec::new();
        let mut row0 = 0;
        // An empty tensor still gets one (4-byte) buffer, so binding it is valid.
        while row0 < rows || chunks.is_empty() {
            let n = per.min(rows - row0);
            let bytes = (n * cols) as u64 * F32;
            let buf = gpu.scoped("upload", || {
                gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("tensor"),
                    size: bytes.max(F32),
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })?;
            if let Some(d) = data {
                if bytes > 0 {
                    let src = &d[row0 * cols..(row0 + n) * cols];
                    gpu.queue.write_buffer(&buf, 0, bytemuck::cast_slice(src));
                }
            }
            chunks.push(Chunk { buf, row0, rows: n });
            row0 += n;
            if n == 0 {
                break;
            }
        }
        Ok(GpuTensor {
            shape: shape.to_vec(),
            chunks,
        })
    }

    /// Copies `src` into this tensor on the device (same shape and the same split into
    /// buffers, which two tensors of one shape allocated under one chunk size have).
    pub fn copy_from(&self, gpu: &Gpu, src: &GpuTensor) -> GpuResult<()> {
        let same_split = self.chunks.len() == src.chunks.len()
            && self
                .chunks
                .iter()
                .zip(&src.chunks)
                .all(|(a, b)| a.row0 == b.row0 && a.rows == b.rows);
        if self.shape != src.shape || !same_split {
            return Err(GpuError::shape(
                "copy",
                format!(
                    "source {:?} in {} buffers does not fit destination {:?} in {}",
                    src.shape,
                    src.chunks.len(),
                    self.shape,
                    self.chunks.len()
                ),
            ));
        }
        let cols = self.cols() as u64;
        gpu.scoped("copy", || {
            let mut enc = gpu
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
            for (d, s) in self.chunks.iter().zip(&src.chunks) {
                let bytes = s.rows as u64 * cols * F32;
                if bytes > 0 {
                    enc.copy_buffer_to_buffer(&s.buf, 0, &d.buf, 0, bytes);
                }
            }
            gpu.queue.submit([enc.finish()]);
        })
    }

    /// Overwrites the tensor's contents (same element count).
    pub fn write(&self, gpu: &Gpu, data: &[f32]) -> GpuResult<()> {
        if data.len() != self.numel() {
            return Err(GpuError::shape(
                "write",
                format!("{} values for shape {:?}", data.len(), self.shape),
            ));
        }
        let cols = self.cols();
        for c in &self.chunks {
            if c.rows > 0 && cols > 0 {
                let src = &data[c.row0 * cols..(c.row0 + c.rows) * cols];
                gpu.queue.write_buffer(&c.buf, 0, bytemuck::cast_slice(src));
            }
        }
        Ok(())
    }

    /// Copies the tensor back to the host (waits for all submitted work).
    pub fn download(&self, gpu: &Gpu) -> GpuResult<Vec<f32>> {
        let cols = self.cols();
        let mut out = Vec::with_capacity(self.numel());
        for c in &self.chunks {
            let bytes = (c.rows * cols) as u64 * F32;
            if bytes == 0 {
                continue;
            }
            let staging = gpu.scoped("download", || {
                let staging = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("staging"),
                    size: bytes,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                let mut enc = gpu
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
                enc.copy_buffer_to_buffer(&c.buf, 0, &staging, 0, bytes);
                gpu.queue.submit([enc.finish()]);
                staging
            })?;
            let (tx, rx) = std::sync::mpsc::channel();
            staging.map_async(wgpu::MapMode::Read, .., move |r| {
                let _ = tx.send(r);
            });
            gpu.sync()?;
            let mapped = rx.recv().ok().and_then(|r| r.ok()).is_some();
            if !mapped {
                return Err(GpuError::Wgpu {
                    op: "download",
                    msg: "mapping the staging buffer failed".into(),
                });
            }
            {
                let view = staging.get_mapped_range(..).map_err(|e| GpuError::Wgpu {
                    op: "download",
                    msg: e.to_string(),
                })?;
                out.extend_from_slice(bytemuck::cast_slice(&view));
            }
            staging.unmap();
        }
        Ok(out)
    }

    /// Downloads into a CPU tensor of the same shape.
    pub fn to_tensor(&self, gpu: &Gpu) -> GpuResult<crate::backend::Tensor> {
        let data = self.download(gpu)?;
        crate::backend::Tensor::new(self.shape.clone(), data)
            .ok_or_else(|| GpuError::shape("download", "element count changed"))
    }

    /// A view of the same buffers under another shape with the same row length and count of
    /// elements (e.g. `[B, T, C]` as `[B*T, C]`).
    pub fn reshape(self, shape: &[usize]) -> GpuResult<GpuTensor> {
        let numel: usize = shape.iter().product();
        if numel != self.numel() || shape.last() != self.shape.last() {
            return Err(GpuError::shape(
                "reshape",
                format!("{:?} cannot be viewed as {shape:?}", self.shape),
            ));
        }
        Ok(GpuTensor {
            shape: shape.to_vec(),
            chunks: self.chunks,
        })
    }
}

/// A read-only index buffer (token ids, key spans) for one launch.
pub(crate) fn upload_u32(gpu: &Gpu, op: &'static str, data: &[u32]) -> GpuResult<wgpu::Buffer> {
    use wgpu::util::DeviceExt;
    // An empty slice still needs a bindable (non-zero) buffer.
    let pad = [0u32];
    let contents: &[u32] = if data.is_empty() { &pad } else { data };
    gpu.scoped(op, || {
        gpu.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(op),
                contents: bytemuck::cast_slice(contents),
                usage: wgpu::BufferUsages::STORAGE,
            })
    })
}
