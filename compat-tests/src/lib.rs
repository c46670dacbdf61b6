//! compat-tests holds no library code: its tests live in `tests/compat/main.rs`, its fixtures in
//! `fixtures/`, the recorder in `record/` and the live SDK scripts in `live/`.
