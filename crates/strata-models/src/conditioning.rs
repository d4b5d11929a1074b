//! What the UNet's cross-attention attends to: the contract between the text side (CLIP,
//! segment encoding, fusion) and the diffusion side (UNet).

use candle_core::Tensor;

/// Cross-attention conditioning for one UNet evaluation.
#[derive(Debug, Clone)]
pub enum Conditioning {
    /// One context `(B, N, D)`: a flat prompt (N = 77) or the fusion module's weighted
    /// concatenation of the three segments (N = 3·77 = 231). Works with any SD UNet.
    Context(Tensor),
    /// The three segment encodings `(B, 3, N, D)` (scene, relation, elements), attended one by
    /// one with the same K/V projections; the three attention outputs are mixed by `weights`
    /// `(B, 3)`, the fusion module's w(t) at this timestep.
    Decoupled { segments: Tensor, weights: Tensor },
}
