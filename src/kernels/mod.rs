//! CPU kernels. Each has a scalar reference; SIMD paths are chosen at run time from the detected ISA
//! ([`isa::Isa`]) and property-tested against the reference.

pub mod cnn_act;
pub mod conv;
pub mod conv_i8;
pub mod isa;
pub mod matmul;
pub mod ops;
pub mod pool;
pub mod qmatmul;
pub mod quant;
