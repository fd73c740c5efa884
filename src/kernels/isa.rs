//! Run-time detection of the instruction-set extensions the kernels can use.

use std::sync::OnceLock;

/// The SIMD extensions available on this CPU (all false on non-x86 targets: the portable paths are used).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Isa {
    pub avx2_fma: bool,
    pub avx512f: bool,
    pub avx512bw: bool,
    pub avx512vnni: bool,
    pub avx512bf16: bool,
    pub avxvnni: bool,
}

impl Isa {
    /// Detect once and cache. `SIGFLOW_ISA=scalar|avx2|avx512` caps what is used (for tests and comparisons).
    pub fn get() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| Isa::detect().capped(std::env::var("SIGFLOW_ISA").ok().as_deref()))
    }

    /// What the CPU supports, ignoring `SIGFLOW_ISA`.
    #[cfg(target_arch = "x86_64")]
    pub fn detect() -> Isa {
        Isa {
            avx2_fma: is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            avx512f: is_x86_feature_detected!("avx512f"),
            avx512bw: is_x86_feature_detected!("avx512bw"),
            avx512vnni: is_x86_feature_detected!("avx512vnni"),
            avx512bf16: is_x86_feature_detected!("avx512bf16"),
            avxvnni: is_x86_feature_detected!("avxvnni"),
        }
    }

    /// What the CPU supports, ignoring `SIGFLOW_ISA`.
    #[cfg(not(target_arch = "x86_64"))]
    pub fn detect() -> Isa {
        Isa::default()
    }

    /// Only the scalar reference paths.
    pub fn scalar() -> Isa {
        Isa::default()
    }

    /// Limit to at most the named level (`scalar`, `avx2`, `avx512`); anything else leaves it unchanged.
    pub fn capped(self, level: Option<&str>) -> Isa {
        match level {
            Some("scalar") => Isa::default(),
            Some("avx2") => Isa {
                avx2_fma: self.avx2_fma,
                avxvnni: self.avxvnni,
                ..Isa::default()
            },
            _ => self,
        }
    }

    /// A short name of the best level, for logs and benchmark output.
    pub fn name(&self) -> &'static str {
        if self.avx512f {
            "avx512"
        } else if self.avx2_fma {
            "avx2"
        } else {
            "scalar"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capping_removes_levels() {
        let all = Isa {
            avx2_fma: true,
            avx512f: true,
            avx512bw: true,
            avx512vnni: true,
            avx512bf16: true,
            avxvnni: false,
        };
        assert_eq!(all.capped(Some("scalar")), Isa::default());
        let avx2 = all.capped(Some("avx2"));
        assert!(avx2.avx2_fma && !avx2.avx512f && !avx2.avx512vnni);
        assert_eq!(all.capped(None), all);
        assert_eq!(avx2.name(), "avx2");
    }
}
