//! One file per verb; each is thin and calls into the layers.

pub mod doctor;
pub mod enter;
pub mod profile;
