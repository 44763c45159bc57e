//! NVTX ranges (named spans on the Nsight Systems timeline) with no link-time dependency.
//!
//! `libnvToolsExt.so.1` is opened with `dlopen` on first use, and only when profiling is asked for:
//! the env var `MODERNBERT_NVTX=1`, or the cargo feature `nvtx` (then `MODERNBERT_NVTX=0` turns it
//! off). Otherwise — and whenever the library or its symbols are missing — a range costs one relaxed
//! atomic load and does nothing. Names are `&'static CStr` (`c"layer.attention"`), so a range never
//! allocates, not even when enabled.
//!
//! ```ignore
//! let _r = nvtx::range(c"layer.mlp"); // popped when `_r` goes out of scope
//! ```

use std::ffi::{c_char, c_int, CStr};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// Library names tried in order.
const LIB_NAMES: &[&str] = &["libnvToolsExt.so.1", "libnvToolsExt.so"];

type PushFn = unsafe extern "C" fn(*const c_char) -> c_int;
type PopFn = unsafe extern "C" fn() -> c_int;

/// The resolved entry points, with the library kept loaded for as long as they are used.
struct Nvtx {
    push: PushFn,
    pop: PopFn,
    _lib: libloading::Library,
}

impl Nvtx {
    /// Open the first loadable library of `names` that has both symbols.
    fn load(names: &[&str]) -> Option<Nvtx> {
        names.iter().find_map(|name| {
            // SAFETY: loading libnvToolsExt runs its initialisers, which only set up NVTX's injection
            // hooks; both symbols have the C signatures of nvToolsExt.h (`int nvtxRangePushA(const
            // char*)`, `int nvtxRangePop(void)`), and the pointers are used only while `_lib` lives
            // (the `Nvtx` is stored in a static and never dropped).
            unsafe {
                let lib = libloading::Library::new(name).ok()?;
                let push = *lib.get::<PushFn>(b"nvtxRangePushA\0").ok()?;
                let pop = *lib.get::<PopFn>(b"nvtxRangePop\0").ok()?;
                Some(Nvtx { push, pop, _lib: lib })
            }
        })
    }

    fn range(&self, name: &'static CStr) -> RangeGuard {
        // SAFETY: `name` is a NUL-terminated static string; see `load` for the function pointer.
        unsafe { (self.push)(name.as_ptr()) };
        RangeGuard {
            pop: Some(self.pop),
            _not_send: PhantomData,
        }
    }
}

const UNINIT: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;

/// Fast-path state: `OFF` after initialisation found NVTX not wanted or not available.
static STATE: AtomicU8 = AtomicU8::new(UNINIT);
static NVTX: OnceLock<Option<Nvtx>> = OnceLock::new();

/// Whether NVTX is asked for: env `MODERNBERT_NVTX` = `1` (on) / `0` (off), else the `nvtx` feature.
fn wanted(env: Option<&str>, feature: bool) -> bool {
    match env.map(str::trim) {
        Some("1") => true,
        Some("0") => false,
        _ => feature,
    }
}

fn nvtx() -> Option<&'static Nvtx> {
    NVTX.get_or_init(|| {
        let env = std::env::var("MODERNBERT_NVTX").ok();
        let n = if wanted(env.as_deref(), cfg!(feature = "nvtx")) {
            Nvtx::load(LIB_NAMES)
        } else {
            None
        };
        STATE.store(if n.is_some() { ON } else { OFF }, Ordering::Relaxed);
        n
    })
    .as_ref()
}

/// Whether ranges are emitted (NVTX asked for and the library loaded). Initialises on first call.
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        OFF => false,
        ON => true,
        _ => nvtx().is_some(),
    }
}

/// Open a range named `name` on this thread; it is closed when the guard drops.
#[inline]
pub fn range(name: &'static CStr) -> RangeGuard {
    if STATE.load(Ordering::Relaxed) == OFF {
        return RangeGuard::noop();
    }
    range_slow(name)
}

#[inline(never)]
fn range_slow(name: &'static CStr) -> RangeGuard {
    match nvtx() {
        Some(n) => n.range(name),
        None => RangeGuard::noop(),
    }
}

/// Closes its NVTX range on drop (if it opened one). Not `Send`: NVTX ranges are per thread.
#[must_use = "the range closes when the guard is dropped; bind it: `let _r = nvtx::range(..)`"]
pub struct RangeGuard {
    pop: Option<PopFn>,
    _not_send: PhantomData<*const ()>,
}

impl RangeGuard {
    fn noop() -> Self {
        RangeGuard {
            pop: None,
            _not_send: PhantomData,
        }
    }
    /// Whether this guard opened a real range.
    pub fn is_active(&self) -> bool {
        self.pop.is_some()
    }
}

impl Drop for RangeGuard {
    fn drop(&mut self) {
        if let Some(pop) = self.pop {
            // SAFETY: the library stays loaded for the process (static `NVTX`); pops the range this
            // guard pushed on this thread.
            unsafe { pop() };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_by_env_or_feature() {
        assert!(!wanted(None, false));
        assert!(wanted(None, true));
        assert!(wanted(Some("1"), false));
        assert!(!wanted(Some("0"), true));
        assert!(!wanted(Some("yes"), false));
        assert!(wanted(Some("yes"), true));
    }

    #[test]
    fn missing_library_gives_no_nvtx() {
        assert!(Nvtx::load(&["libmodernbert_no_such_nvtx.so.1"]).is_none());
    }

    #[test]
    fn ranges_are_noops_without_nvtx() {
        // On a machine without libnvToolsExt (or with NVTX not asked for, the default for tests),
        // whatever MODERNBERT_NVTX says, ranges open nothing and nesting/dropping is harmless.
        let available = wanted(std::env::var("MODERNBERT_NVTX").ok().as_deref(), cfg!(feature = "nvtx"))
            && Nvtx::load(LIB_NAMES).is_some();
        assert_eq!(enabled(), available);
        if !available {
            let outer = range(c"test.outer");
            let inner = range(c"test.inner");
            assert!(!outer.is_active() && !inner.is_active());
            drop(inner);
            drop(outer);
            assert_eq!(STATE.load(Ordering::Relaxed), OFF, "the fast path is taken from now on");
            for _ in 0..1000 {
                let _r = range(c"test.loop");
            }
        }
        // The disabled guard is a bare nullable function pointer: no heap state to allocate.
        assert_eq!(std::mem::size_of::<RangeGuard>(), std::mem::size_of::<usize>());
    }
}
