//! The name serde gives a unit enum variant (after `rename_all`), so that
//! text output uses the JSON names without a second, hand-kept table.

use std::fmt;

use serde::Serialize;
use serde::ser::{self, Impossible};

/// The serialized name of `v`, a unit variant of a `Serialize` enum (for
/// `#[serde(rename_all = "snake_case")]`: `AuthRefused` → `auth_refused`).
///
/// # Panics
/// When `v` does not serialize as a unit variant (a programming error).
pub fn variant_name<T: Serialize>(v: &T) -> &'static str {
    match v.serialize(VariantName) {
        Ok(name) => name,
        Err(NotUnit) => panic!("variant_name: {} is not a unit enum variant", std::any::type_name::<T>()),
    }
}

/// The serializer that only takes unit variants.
struct VariantName;

/// Anything but a unit variant.
#[derive(Debug)]
struct NotUnit;

impl fmt::Display for NotUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a unit enum variant")
    }
}

impl std::error::Error for NotUnit {}

impl ser::Error for NotUnit {
    fn custom<M: fmt::Display>(_: M) -> Self {
        NotUnit
    }
}

/// `fn name(self, _: T) -> Result<..> { Err(NotUnit) }` for each.
macro_rules! refuse {
    ($($name:ident($($t:ty),*)),* $(,)?) => {
        $(fn $name(self, $(_: $t),*) -> Result<Self::Ok, NotUnit> { Err(NotUnit) })*
    };
}

impl ser::Serializer for VariantName {
    type Ok = &'static str;
    type Error = NotUnit;
    type SerializeSeq = Impossible<&'static str, NotUnit>;
    type SerializeTuple = Impossible<&'static str, NotUnit>;
    type SerializeTupleStruct = Impossible<&'static str, NotUnit>;
    type SerializeTupleVariant = Impossible<&'static str, NotUnit>;
    type SerializeMap = Impossible<&'static str, NotUnit>;
    type SerializeStruct = Impossible<&'static str, NotUnit>;
    type SerializeStructVariant = Impossible<&'static str, NotUnit>;

    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<&'static str, NotUnit> {
        Ok(variant)
    }

    refuse!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
    );

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<&'static str, NotUnit> {
        Err(NotUnit)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, _: &T) -> Result<&'static str, NotUnit> {
        Err(NotUnit)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<&'static str, NotUnit> {
        Err(NotUnit)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NotUnit> {
        Err(NotUnit)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NotUnit> {
        Err(NotUnit)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, NotUnit> {
        Err(NotUnit)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, NotUnit> {
        Err(NotUnit)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, NotUnit> {
        Err(NotUnit)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, NotUnit> {
        Err(NotUnit)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, NotUnit> {
        Err(NotUnit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    #[serde(rename_all = "snake_case")]
    enum E {
        AuthRefused,
        Ok,
        #[serde(rename = "other-name")]
        Renamed,
        #[allow(dead_code)]
        Data(u8),
    }

    #[test]
    fn unit_variants_by_their_serde_names() {
        assert_eq!(variant_name(&E::AuthRefused), "auth_refused");
        assert_eq!(variant_name(&E::Ok), "ok");
        assert_eq!(variant_name(&E::Renamed), "other-name");
    }

    #[test]
    #[should_panic(expected = "not a unit enum variant")]
    fn other_values_are_a_programming_error() {
        variant_name(&E::Data(1));
    }
}
