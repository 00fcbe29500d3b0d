//! The hub on the in-memory store: every scenario of `common::scenarios`.

mod common;

use common::scenarios::{self, Memory};

macro_rules! memory_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            scenarios::$name(&Memory).await;
        }
    )*};
}

scenarios::for_each_scenario!(memory_tests);
