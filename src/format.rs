//! Record formats: how bytes become [`Reading`](crate::model::Reading)s, independent of how
//! the bytes travel (see [`source`](crate::source) for transports).

pub mod json;
#[cfg(feature = "parquet")]
pub mod parquet;
pub mod text;
