//! [`View`]: rows of a tensor seen as a matrix, so a kernel can read or write part of a packed
//! buffer in place (GPT-2's q, k and v are column blocks of one qkv [N, 3C] tensor; Llama's
//! are three tensors of their own).

use crate::gpu::Tensor;

/// Element (r, j) of the view is element `offset + r·stride + j` of `tensor`. The kernel that
/// takes it says how many rows and columns it touches.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub tensor: &'a Tensor,
    /// Element offset of (0, 0).
    pub offset: usize,
    /// Elements from one row to the next.
    pub stride: usize,
}

impl<'a> View<'a> {
    pub fn new(tensor: &'a Tensor, offset: usize, stride: usize) -> View<'a> {
        View { tensor, offset, stride }
    }

    /// A whole row-major tensor of `cols` columns.
    pub fn packed(tensor: &'a Tensor, cols: usize) -> View<'a> {
        View { tensor, offset: 0, stride: cols }
    }

    /// Columns `first..` of a row-major tensor whose rows hold `stride` values.
    pub fn cols(tensor: &'a Tensor, first: usize, stride: usize) -> View<'a> {
        View { tensor, offset: first, stride }
    }

    /// Whether `rows` x `cols` elements from (0, 0) lie inside the tensor.
    pub fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || self.offset + (rows - 1) * self.stride + cols <= self.tensor.len()
    }
}

impl std::fmt::Debug for View<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "View({} +{} stride {})", self.tensor.label, self.offset, self.stride)
    }
}
