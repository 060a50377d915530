//! A dense, row-major f32 tensor. Compute happens in f32 (DESIGN.md, "dtype"); storage dtypes
//! live in `checkpoint::DType` and are converted at the boundary.

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Tensor {
    /// Builds a tensor; `None` when the element count does not match the shape.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Option<Self> {
        let numel = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
        (numel == data.len()).then_some(Tensor { shape, data })
    }

    pub fn zeros(shape: Vec<usize>) -> Self {
        let numel = shape.iter().product();
        Tensor {
            shape,
            data: vec![0.0; numel],
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn into_data(self) -> Vec<f32> {
        self.data
    }

    /// The size of the last dimension (the row length of a row-major matrix).
    pub fn cols(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }

    /// The number of rows when the tensor is viewed as a matrix `[numel / cols, cols]`.
    pub fn rows(&self) -> usize {
        self.data.len().checked_div(self.cols()).unwrap_or(0)
    }

    pub fn row(&self, i: usize) -> &[f32] {
        let c = self.cols();
        &self.data[i * c..(i + 1) * c]
    }
}
