//! The decision pipeline and the hot-swappable state.
