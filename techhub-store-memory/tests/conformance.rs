//! The shared storage conformance suite, run against the memory store: directly, and through a
//! `Box<dyn Storage>` to prove the trait family is usable as a trait object.

use std::sync::Arc;

use techhub_core::storage::Storage;
use techhub_core::storage::conformance::{Fixture, Harness};
use techhub_store_memory::MemoryStore;

struct Memory;

#[async_trait::async_trait]
impl Harness for Memory {
    async fn fresh(&self) -> Fixture {
        Fixture::new(Arc::new(MemoryStore::new()))
    }
}

struct BoxedMemory;

#[async_trait::async_trait]
impl Harness for BoxedMemory {
    async fn fresh(&self) -> Fixture {
        let boxed: Box<dyn Storage> = Box::new(MemoryStore::new());
        Fixture::new(Arc::from(boxed))
    }
}

mod direct {
    techhub_core::conformance_tests!(super::Memory);
}

mod boxed {
    techhub_core::conformance_tests!(super::BoxedMemory);
}
