//! TechHub's benchmarks. The criterion suites live in `benches/` (`cargo bench -p techhub-benches`); this
//! library is empty.
