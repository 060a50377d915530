//! Test support: one device shared by every GPU test, used by one test at a time (wgpu error
//! scopes are per thread and lavapipe already uses every core). Without an adapter the tests
//! print why and pass, unless `INTERVENE_REQUIRE_GPU=1` (set by CI once it has installed the
//! software driver), which turns the skip into a failure so a broken install cannot hide.

use std::sync::{Mutex, OnceLock};

use super::{AdapterPolicy, Gpu};

static LOCK: Mutex<()> = Mutex::new(());
static GPU: OnceLock<Result<Gpu, String>> = OnceLock::new();

/// Runs `f` on the shared device, or skips with a printed reason.
pub(crate) fn with_gpu(test: &str, f: impl FnOnce(&Gpu)) {
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    match GPU.get_or_init(|| Gpu::new(AdapterPolicy::Any).map_err(|e| e.to_string())) {
        Ok(gpu) => {
            gpu.set_chunk_bytes(gpu.max_chunk_bytes());
            f(gpu);
            gpu.set_chunk_bytes(gpu.max_chunk_bytes());
        }
        Err(e) => {
            assert!(
                std::env::var_os("INTERVENE_REQUIRE_GPU").is_none(),
                "{test}: INTERVENE_REQUIRE_GPU is set but {e}"
            );
            eprintln!("skipping {test}: {e}");
        }
    }
}
