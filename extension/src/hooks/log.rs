//! emit_log_hook: no card number reaches the server log through a message
//! Postgres emits (PCI DSS 3.5.1, 10.3).
//!
//! Before a message is written to the server log, every card number the
//! shared detector finds in its text fields (message, detail, hint, context,
//! internal query) is masked (`pan_last4`), and so is the `STATEMENT:` line
//! Postgres appends from `debug_query_string`. The client of the same message
//! receives the same masked text: Postgres builds both from one ErrorData.
//!
//! This hook runs inside error reporting, so it must never raise an error
//! itself: it calls Postgres only through raw bindings that cannot fail short
//! of running out of memory, and if masking ever fails the line is kept out
//! of the server log rather than written raw.

use hoop_common::mask::{Masker, Strategy};
use pgrx::pg_sys;
use std::ffi::{c_char, c_void, CStr};
use std::sync::{Mutex, OnceLock};

static mut PREVIOUS: pg_sys::emit_log_hook_type = None;

pub(crate) unsafe fn install() {
    PREVIOUS = pg_sys::emit_log_hook;
    pg_sys::emit_log_hook = Some(emit_log);
}

unsafe extern "C-unwind" {
    #[link_name = "MemoryContextAlloc"]
    fn raw_alloc(context: pg_sys::MemoryContext, size: usize) -> *mut c_void;
    #[link_name = "pfree"]
    fn raw_pfree(pointer: *mut c_void);
}

// Statics, not thread-locals: this hook also runs while a backend exits,
// after thread-local destructors may have run.
static MASKER: OnceLock<Masker> = OnceLock::new();
/// The masked text of the last field, until it is copied out.
static BUFFER: Mutex<Vec<u8>> = Mutex::new(Vec::new());

fn buffer() -> std::sync::MutexGuard<'static, Vec<u8>> {
    BUFFER
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The statement text this hook last put in `debug_query_string`.
static mut MASKED_STATEMENT: *mut c_char = std::ptr::null_mut();

/// Masks `text` into [`BUFFER`]; `Some(len)` when it changed, `None` when it
/// holds no card number, `Err` when masking failed.
fn mask_into_buffer(text: &[u8]) -> Result<Option<usize>, ()> {
    std::panic::catch_unwind(|| {
        let masker = MASKER
            .get_or_init(|| Masker::new(Strategy::PanLast4, None).expect("pan_last4 needs no key"));
        match masker.mask_bytes(text) {
            std::borrow::Cow::Borrowed(_) => None,
            std::borrow::Cow::Owned(masked) => {
                let mut buffer = buffer();
                buffer.clear();
                buffer.extend_from_slice(&masked);
                Some(buffer.len())
            }
        }
    })
    .map_err(|_| ())
}

/// A NUL-terminated copy of [`BUFFER`]'s first `len` bytes in `context`.
unsafe fn buffer_copy(context: pg_sys::MemoryContext, len: usize) -> *mut c_char {
    // The guard is released here; nothing else masks until the copy is made.
    let from = buffer().as_ptr();
    let out = raw_alloc(context, len + 1) as *mut u8;
    std::ptr::copy_nonoverlapping(from, out, len);
    *out.add(len) = 0;
    out as *mut c_char
}

/// Masks one text field of the message in place; false when masking failed.
unsafe fn mask_field(field: &mut *mut c_char, context: pg_sys::MemoryContext) -> bool {
    if field.is_null() {
        return true;
    }
    match mask_into_buffer(CStr::from_ptr(*field).to_bytes()) {
        Ok(Some(len)) => {
            // The old text stays in the error context, which is reset after.
            *field = buffer_copy(context, len);
            true
        }
        Ok(None) => true,
        Err(()) => false,
    }
}

unsafe extern "C-unwind" fn emit_log(edata: *mut pg_sys::ErrorData) {
    if (*edata).output_to_server {
        let context = if (*edata).assoc_context.is_null() {
            pg_sys::ErrorContext
        } else {
            (*edata).assoc_context
        };
        let e = &mut *edata;
        let masked = mask_field(&mut e.message, context)
            && mask_field(&mut e.detail, context)
            && mask_field(&mut e.detail_log, context)
            && mask_field(&mut e.hint, context)
            && mask_field(&mut e.context, context)
            && mask_field(&mut e.internalquery, context)
            && mask_statement(e);
        if !masked {
            // Fail closed: better a missing log line than a raw card number.
            e.output_to_server = false;
        }
    }
    if let Some(previous) = PREVIOUS {
        previous(edata);
    }
}

/// The `STATEMENT:` line is printed from `debug_query_string`: when it holds
/// a card number, it is pointed at a masked copy (kept in TopMemoryContext
/// until the next one; Postgres resets the pointer for every new statement).
unsafe fn mask_statement(edata: &pg_sys::ErrorData) -> bool {
    let statement = pg_sys::debug_query_string;
    if edata.hide_stmt || statement.is_null() || std::ptr::eq(statement, MASKED_STATEMENT) {
        return true;
    }
    match mask_into_buffer(CStr::from_ptr(statement).to_bytes()) {
        Ok(Some(len)) => {
            let copy = buffer_copy(pg_sys::TopMemoryContext, len);
            if !MASKED_STATEMENT.is_null() {
                raw_pfree(MASKED_STATEMENT as *mut c_void);
            }
            MASKED_STATEMENT = copy;
            pg_sys::debug_query_string = copy;
            true
        }
        Ok(None) => true,
        Err(()) => false,
    }
}
