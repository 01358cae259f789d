//! BPF task-local storage (Linux 5.11+): one value per task, found from the
//! task itself rather than by hashing a key, and freed by the kernel when the
//! task exits. aya-ebpf 0.2 has no wrapper; this is the BTF map definition
//! the loader reads (the field names and array lengths carry the settings).
use core::{ffi::c_void, ptr};

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_LOCAL_STORAGE_GET_F_CREATE, bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE},
    helpers::{bpf_get_current_task_btf, generated::bpf_task_storage_get},
};

#[repr(C)]
pub struct TaskStorage<T> {
    r#type: *const [i32; BPF_MAP_TYPE_TASK_STORAGE as usize],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: the fields are placeholders the loader reads from BTF; never dereferenced.
unsafe impl<T> Sync for TaskStorage<T> {}

impl<T> TaskStorage<T> {
    pub const fn new() -> Self {
        TaskStorage {
            r#type: ptr::null(),
            key: ptr::null(),
            value: ptr::null(),
            max_entries: ptr::null(),
            map_flags: ptr::null(),
        }
    }

    /// The current task's value; with `create`, a zeroed one is made if missing.
    #[inline(always)]
    pub fn current(&self, create: bool) -> Option<*mut T> {
        self.of(unsafe { bpf_get_current_task_btf() }.cast(), create)
    }

    /// The value of `task`, a BTF task pointer (for a probe that reads the
    /// task's fields too: one `bpf_get_current_task_btf` call for both).
    #[inline(always)]
    pub fn of(&self, task: *const u8, create: bool) -> Option<*mut T> {
        let flags = if create { BPF_LOCAL_STORAGE_GET_F_CREATE as u64 } else { 0 };
        let map = ptr::from_ref(self).cast_mut().cast::<c_void>();
        let value = unsafe { bpf_task_storage_get(map, task.cast_mut().cast(), ptr::null_mut(), flags) };
        (!value.is_null()).then_some(value.cast())
    }
}
