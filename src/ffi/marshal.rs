//! The C ABI's plumbing behind the entry points of `ffi.rs`: errors and the thread-local
//! message, the panic guard, argument checks (pointers, UTF-8, counts, output buffers), the
//! versioned option structs, and the per-text results collected as one call's. The rules of the
//! tasks themselves are the engine's.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::mem::{align_of, offset_of, size_of, size_of_val};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use std::time::{Duration, Instant};

use super::*;
use crate::coalesce::CallLimits;
use crate::engine::{DeviceChoice, EmbedOptions, Engine, EngineOptions};
use crate::error::Error;
use crate::kernels::Dtype;
use crate::reference::ops::Pooling;
use crate::tokenize::OverlongPolicy;

// ---------------------------------------------------------------------------------------------
// Errors

pub(super) struct Fail {
    status: mb_status,
    message: String,
}

pub(super) fn fail(status: mb_status, message: impl Into<String>) -> Fail {
    Fail {
        status,
        message: message.into(),
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::Io { .. } | Error::Config { .. } | Error::Safetensors { .. } | Error::Weights(_) => {
                mb_status::MB_ERR_MODEL
            }
            Error::Tokenizer(_) => mb_status::MB_ERR_TOKENIZER,
            Error::TextTooLong(_) => mb_status::MB_ERR_TEXT_TOO_LONG,
            Error::Input(_) => mb_status::MB_ERR_INPUT,
            Error::Unsupported(_) => mb_status::MB_ERR_UNSUPPORTED,
            Error::Device(_) => mb_status::MB_ERR_DEVICE,
            // A size from an option or a count: the caller's argument; from config.json: the model.
            Error::TooLarge(_) => mb_status::MB_ERR_INVALID_ARGUMENT,
            Error::NonFinite(_) => mb_status::MB_ERR_NON_FINITE,
            Error::Timeout(_) | Error::Cancelled(_) => mb_status::MB_ERR_TIMEOUT,
        };
        Fail {
            status,
            message: e.to_string(),
        }
    }
}

pub(super) type Res<T> = std::result::Result<T, Fail>;

thread_local! {
    /// The last failed call's message on this thread (`None`: the last call succeeded).
    pub(super) static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

pub(super) fn set_last_error(message: Option<String>) {
    let c = message.map(|m| CString::new(m.replace('\0', "\\0")).unwrap_or_default());
    // `try_with`: during thread teardown the slot may be gone; then there is no one to tell.
    let _ = LAST_ERROR.try_with(|slot| {
        if let Ok(mut slot) = slot.try_borrow_mut() {
            if c.is_some() || slot.is_some() {
                *slot = c;
            }
        }
    });
}

pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Run an entry point's body: clear the last error, catch panics, record failures.
pub(super) fn guard(body: impl FnOnce() -> Res<()>) -> mb_status {
    set_last_error(None);
    let (status, message) = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return mb_status::MB_OK,
        Ok(Err(f)) => (f.status, f.message),
        Err(payload) => {
            let m = format!("internal error (panic): {}", panic_message(&*payload));
            // Dropping a payload can itself panic; never let that unwind out of here.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
            (mb_status::MB_ERR_INTERNAL, m)
        }
    };
    let message = message.lines().next().unwrap_or("").to_string();
    let _ = catch_unwind(AssertUnwindSafe(|| set_last_error(Some(message))));
    status
}

// ---------------------------------------------------------------------------------------------
// Argument checks

pub(super) fn non_null<T>(p: *const T, name: &str) -> Res<()> {
    if p.is_null() {
        return Err(fail(mb_status::MB_ERR_NULL_POINTER, format!("{name} is NULL")));
    }
    if !(p as usize).is_multiple_of(align_of::<T>()) {
        return Err(fail(
            mb_status::MB_ERR_INVALID_ARGUMENT,
            format!("{name} is not aligned for its type"),
        ));
    }
    Ok(())
}

pub(super) unsafe fn engine_ref<'a>(e: *const mb_engine) -> Res<&'a mb_engine> {
    non_null(e, "engine")?;
    Ok(&*e)
}

/// A NUL-terminated UTF-8 string argument.
pub(super) unsafe fn c_str<'a>(p: *const c_char, name: &str) -> Res<&'a str> {
    non_null(p, name)?;
    CStr::from_ptr(p).to_str().map_err(|e| {
        fail(
            mb_status::MB_ERR_INVALID_UTF8,
            format!("{name} is not valid UTF-8 ({e})"),
        )
    })
}

pub(super) unsafe fn utf8<'a>(p: *const c_char, len: usize, name: &str) -> Res<&'a str> {
    if p.is_null() {
        return Err(fail(mb_status::MB_ERR_NULL_POINTER, format!("{name}.ptr is NULL")));
    }
    if len > isize::MAX as usize {
        return Err(fail(
            mb_status::MB_ERR_INVALID_ARGUMENT,
            format!("{name}.len {len} is too large"),
        ));
    }
    let bytes = std::slice::from_raw_parts(p as *const u8, len);
    std::str::from_utf8(bytes).map_err(|e| {
        fail(
            mb_status::MB_ERR_INVALID_UTF8,
            format!("{name} is not valid UTF-8 (bad byte at offset {})", e.valid_up_to()),
        )
    })
}

pub(super) fn check_count<T>(n: usize, name: &str) -> Res<()> {
    if n == 0 {
        return Err(fail(mb_status::MB_ERR_INVALID_ARGUMENT, format!("{name} is 0")));
    }
    if n > isize::MAX as usize / size_of::<T>().max(1) {
        return Err(fail(
            mb_status::MB_ERR_INVALID_ARGUMENT,
            format!("{name} {n} is too large"),
        ));
    }
    Ok(())
}

/// `n` texts as `&str`s: non-NULL array, n > 0, each non-NULL and valid UTF-8. An empty text is a
/// text (`[CLS] [SEP]`, as the Rust API and the CLI embed it).
pub(super) unsafe fn texts<'a>(p: *const mb_text, n: usize, name: &str) -> Res<Vec<&'a str>> {
    non_null(p, name)?;
    check_count::<mb_text>(n, &format!("n_{name}"))?;
    let items = std::slice::from_raw_parts(p, n);
    let mut out = Vec::with_capacity(n);
    for (i, t) in items.iter().enumerate() {
        out.push(utf8(t.ptr, t.len, &format!("{name}[{i}]"))?);
    }
    Ok(out)
}

/// Report `needed` through the optional `out_needed`, then hand out the first `needed` elements of
/// the caller's buffer, or `MB_ERR_BUFFER_TOO_SMALL` without touching it.
pub(super) unsafe fn out_buffer<'a, T>(
    p: *mut T,
    capacity: usize,
    needed: usize,
    out_needed: *mut usize,
    name: &str,
) -> Res<&'a mut [T]> {
    if !out_needed.is_null() {
        non_null(out_needed as *const usize, "out_needed")?;
        *out_needed = needed;
    }
    if capacity < needed {
        return Err(fail(
            mb_status::MB_ERR_BUFFER_TOO_SMALL,
            format!("{name} has capacity {capacity}, {needed} elements are needed"),
        ));
    }
    if needed == 0 {
        return Ok(&mut []);
    }
    non_null(p as *const T, name)?;
    if needed > isize::MAX as usize / size_of::<T>().max(1) {
        return Err(fail(
            mb_status::MB_ERR_INVALID_ARGUMENT,
            format!("{name}: {needed} elements is too large"),
        ));
    }
    Ok(std::slice::from_raw_parts_mut(p, needed))
}

/// A required per-text output array of `n` elements.
pub(super) unsafe fn per_text_out<'a, T>(p: *mut T, n: usize, name: &str) -> Res<&'a mut [T]> {
    non_null(p as *const T, name)?;
    Ok(std::slice::from_raw_parts_mut(p, n))
}

pub(super) fn overflow(what: &str) -> Fail {
    fail(mb_status::MB_ERR_INVALID_ARGUMENT, format!("{what} overflows size_t"))
}

pub(super) fn internal(what: &str) -> Fail {
    fail(mb_status::MB_ERR_INTERNAL, format!("internal error: {what}"))
}

/// Read field `f` of a caller's versioned struct when it lies within `struct_size`.
macro_rules! versioned_field {
    ($p:expr, $size:expr, $ty:ty, $f:ident, $into:expr) => {
        if $size >= offset_of!($ty, $f) + size_of_val(&$into.$f) {
            $into.$f = ptr::addr_of!((*$p).$f).read();
        }
    };
}

pub(super) fn default_engine_options() -> mb_engine_options {
    let d = EngineOptions::default();
    mb_engine_options {
        struct_size: size_of::<mb_engine_options>(),
        device: mb_device::MB_DEVICE_AUTO as i32,
        dtype: mb_dtype::MB_DTYPE_BF16 as i32,
        max_batch_tokens: d.max_batch_tokens,
        graphs: d.graphs as i32,
        overlong: mb_overlong::MB_OVERLONG_TRUNCATE as i32,
        device_index: 0,
    }
}

pub(super) fn struct_size_ok(size: usize, name: &str) -> Res<()> {
    if size < size_of::<usize>() {
        return Err(fail(
            mb_status::MB_ERR_INVALID_ARGUMENT,
            format!("{name}->struct_size is {size}: set it to sizeof({name}) first"),
        ));
    }
    Ok(())
}

pub(super) unsafe fn read_engine_options(p: *const mb_engine_options) -> Res<EngineOptions> {
    let mut o = default_engine_options();
    if !p.is_null() {
        non_null(p, "options")?;
        let size = ptr::addr_of!((*p).struct_size).read();
        struct_size_ok(size, "mb_engine_options")?;
        versioned_field!(p, size, mb_engine_options, device, o);
        versioned_field!(p, size, mb_engine_options, dtype, o);
        versioned_field!(p, size, mb_engine_options, max_batch_tokens, o);
        versioned_field!(p, size, mb_engine_options, graphs, o);
        versioned_field!(p, size, mb_engine_options, overlong, o);
        versioned_field!(p, size, mb_engine_options, device_index, o);
    }
    let bad = |what: &str, v: i64| {
        fail(
            mb_status::MB_ERR_INVALID_ARGUMENT,
            format!("options.{what} {v} is out of range"),
        )
    };
    let device = match o.device {
        0 => DeviceChoice::Auto,
        1 => DeviceChoice::Cpu,
        2 => DeviceChoice::EMULATED,
        3 => DeviceChoice::Cuda(o.device_index as usize),
        v => return Err(bad("device", v.into())),
    };
    if o.device_index != 0 && o.device != mb_device::MB_DEVICE_CUDA as i32 {
        return Err(fail(
            mb_status::MB_ERR_INVALID_ARGUMENT,
            format!("options.device_index {} is for MB_DEVICE_CUDA only", o.device_index),
        ));
    }
    let dtype = match o.dtype {
        0 => Dtype::Bf16,
        1 => Dtype::F16,
        v => return Err(bad("dtype", v.into())),
    };
    let overlong = match o.overlong {
        0 => OverlongPolicy::Truncate,
        1 => OverlongPolicy::Refuse,
        v => return Err(bad("overlong", v.into())),
    };
    if o.max_batch_tokens == 0 {
        return Err(bad("max_batch_tokens", 0));
    }
    Ok(EngineOptions {
        device,
        dtype,
        max_batch_tokens: o.max_batch_tokens,
        graphs: o.graphs != 0,
        overlong,
        ..EngineOptions::default()
    })
}

/// The embedding options and the call's queue limit (`timeout_us`).
pub(super) unsafe fn read_embed_options(p: *const mb_embed_options) -> Res<(EmbedOptions, CallLimits)> {
    let mut o = mb_embed_options {
        struct_size: 0,
        pooling: 0,
        normalize: 0,
        dim: 0,
        prompt_name: ptr::null(),
        prompt: ptr::null(),
        timeout_us: 0,
    };
    if !p.is_null() {
        non_null(p, "embed_options")?;
        let size = ptr::addr_of!((*p).struct_size).read();
        struct_size_ok(size, "mb_embed_options")?;
        versioned_field!(p, size, mb_embed_options, pooling, o);
        versioned_field!(p, size, mb_embed_options, normalize, o);
        versioned_field!(p, size, mb_embed_options, dim, o);
        versioned_field!(p, size, mb_embed_options, prompt_name, o);
        versioned_field!(p, size, mb_embed_options, prompt, o);
        versioned_field!(p, size, mb_embed_options, timeout_us, o);
    }
    let bad = |what: &str, v: i32| {
        fail(
            mb_status::MB_ERR_INVALID_ARGUMENT,
            format!("embed_options.{what} {v} is out of range"),
        )
    };
    let pooling = match o.pooling {
        0 => None,
        1 => Some(Pooling::Cls),
        2 => Some(Pooling::Mean),
        v => return Err(bad("pooling", v)),
    };
    let normalize = match o.normalize {
        0 => None,
        1 => Some(true),
        2 => Some(false),
        v => return Err(bad("normalize", v)),
    };
    let opt_str = |p: *const c_char, name: &str| -> Res<Option<String>> {
        if p.is_null() {
            Ok(None)
        } else {
            c_str(p, name).map(|s| Some(s.to_string()))
        }
    };
    let limits = CallLimits {
        // A timeout past what an Instant can hold is no deadline.
        deadline: (o.timeout_us != 0)
            .then(|| Instant::now().checked_add(Duration::from_micros(o.timeout_us)))
            .flatten(),
        ..CallLimits::default()
    };
    let options = EmbedOptions {
        pooling,
        normalize,
        dim: (o.dim != 0).then_some(o.dim),
        dim_after_normalize: false,
        prompt_name: opt_str(o.prompt_name, "embed_options.prompt_name")?,
        prompt: opt_str(o.prompt, "embed_options.prompt")?,
    };
    Ok((options, limits))
}

// ---------------------------------------------------------------------------------------------
// Sizes (the rules are the engine's; these only collect per-text results as one call's)

/// The per-text results as the call's: the first failed text fails the call, named by index.
pub(super) fn all_texts<T>(items: Vec<crate::Result<T>>) -> Res<Vec<T>> {
    Ok(crate::tokenize::collect_per_text(items)?)
}

/// ColBERT's tokens of each text and the vectors each gives (the texts tokenised once).
pub(super) fn colbert_tokens(
    engine: &Engine,
    texts: &[&str],
    is_query: bool,
) -> Res<(Vec<(Vec<u32>, usize)>, Vec<usize>)> {
    engine.colbert_dim()?;
    let tokens = all_texts(engine.colbert_tokens_each(texts, is_query)?)?;
    let counts = tokens
        .iter()
        .map(|(ids, _)| engine.colbert_vector_count(ids, is_query))
        .collect::<crate::Result<Vec<usize>>>()?;
    Ok((tokens, counts))
}

/// Fill-mask's tokens of each text and its `[MASK]` count (the texts tokenised once).
pub(super) fn fill_mask_tokens(engine: &Engine, texts: &[&str]) -> Res<(Vec<Vec<u32>>, Vec<usize>)> {
    let tokens = all_texts(engine.fill_mask_tokens(texts)?)?;
    let counts = tokens
        .iter()
        .map(|ids| engine.mask_count(ids))
        .collect::<crate::Result<Vec<usize>>>()?;
    Ok((tokens, counts))
}

pub(super) fn sum(counts: &[usize], what: &str) -> Res<usize> {
    counts
        .iter()
        .try_fold(0usize, |a, &c| a.checked_add(c))
        .ok_or_else(|| overflow(what))
}
