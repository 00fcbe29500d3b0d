//! Reading Postgres node trees and lists: the few helpers every hook needs.

use pgrx::pg_sys;
use std::ffi::c_void;

pub(crate) unsafe fn list_length(list: *mut pg_sys::List) -> usize {
    if list.is_null() {
        0
    } else {
        (*list).length as usize
    }
}

pub(crate) unsafe fn list_nth(list: *mut pg_sys::List, n: usize) -> *mut c_void {
    (*(*list).elements.add(n)).ptr_value
}

pub(crate) unsafe fn list_ptrs(list: *mut pg_sys::List) -> impl Iterator<Item = *mut c_void> {
    (0..list_length(list)).map(move |n| list_nth(list, n))
}

pub(crate) unsafe fn node_tag(node: *mut pg_sys::Node) -> pg_sys::NodeTag {
    (*node).type_
}
