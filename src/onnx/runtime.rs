//! Loading the ONNX Runtime shared library on first use.
//!
//! sigflow links ONNX Runtime dynamically and only when a config or command needs it, so everything else runs
//! without the library. The library comes from the official `onnxruntime` PyPI wheel (see the README); its path is
//! given by `ORT_DYLIB_PATH`.

use crate::error::{Error, Result};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The ONNX Runtime release the `ort` bindings are built against.
pub const ORT_VERSION: &str = "1.31.1";

fn install_hint() -> String {
    format!(
        "install it with `pip install onnxruntime=={ORT_VERSION}` and set ORT_DYLIB_PATH to \
         <site-packages>/onnxruntime/capi/libonnxruntime.so.{ORT_VERSION} (the README's commands do both)"
    )
}

/// The process-wide ONNX Runtime environment, set once the library is loaded.
static ENVIRONMENT: OnceLock<ort::environment::Environment> = OnceLock::new();

/// The process-wide ONNX Runtime environment (loading the library first), to build sessions from.
pub fn environment() -> Result<ort::environment::Environment> {
    ensure_loaded()?;
    ENVIRONMENT
        .get()
        .cloned()
        .ok_or_else(|| Error::Other("ONNX Runtime environment is not initialised".into()))
}

/// Load ONNX Runtime once per process. Errors (no `ORT_DYLIB_PATH`, missing or unloadable file) say how to
/// install the library; they are remembered, so later calls fail the same way without retrying.
pub fn ensure_loaded() -> Result<()> {
    static STATE: OnceLock<Result<(), String>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            let path = std::env::var_os("ORT_DYLIB_PATH")
                .map(PathBuf::from)
                .ok_or_else(|| {
                    format!(
                        "ONNX Runtime is needed but ORT_DYLIB_PATH is not set: {}",
                        install_hint()
                    )
                })?;
            if !path.is_file() {
                return Err(format!(
                    "ONNX Runtime library {} (ORT_DYLIB_PATH) does not exist: {}",
                    path.display(),
                    install_hint()
                ));
            }
            // `init_from` reports a failed dlopen as an error; a panic inside the bindings is caught as well so a
            // broken library never takes the daemon down.
            let loaded = std::panic::catch_unwind(|| -> Result<(), String> {
                let builder = ort::init_from(&path).map_err(|e| e.to_string())?;
                let env = builder
                    .with_name("sigflow")
                    .with_telemetry(false)
                    .build()
                    .map_err(|e| e.to_string())?;
                // The environment is process-wide and lives for the life of the process; sessions are built from
                // it through [`environment`].
                let _ = ENVIRONMENT.set(env);
                Ok(())
            });
            match loaded {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!(
                    "cannot load ONNX Runtime from {}: {e}; {}",
                    path.display(),
                    install_hint()
                )),
                Err(_) => Err(format!(
                    "loading ONNX Runtime from {} failed; {}",
                    path.display(),
                    install_hint()
                )),
            }
        })
        .clone()
        .map_err(Error::Other)
}
