//! Placeholder: filled in by the owning work item.
fn main() {}
