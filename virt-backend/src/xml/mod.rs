//! Typed models of the libvirt XML documents berth writes and reads.
//!
//! Every document is a serde struct that quick-xml serialises, so text and
//! attribute values are escaped by construction: a `<`, `&`, quote or `]]>`
//! in a value reaches libvirt as that character, never as markup. The
//! models carry only the elements berth writes or needs to read; libvirt's
//! other elements are skipped when a document is parsed.
//!
//! XML 1.0 cannot carry most control characters at all, escaped or not,
//! so [`to_xml`] rejects a document that contains one instead of sending
//! libvirt something it cannot parse.

pub mod capabilities;
pub mod domain;
pub mod storage;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a document could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    /// A value holds a character that XML 1.0 cannot represent.
    #[error("text {context:?} contains {character:?}, which XML 1.0 cannot represent")]
    Unrepresentable {
        /// The text around the character.
        context: String,
        /// The character.
        character: char,
    },
    /// quick-xml failed to serialise the document.
    #[error("serialise {document} XML")]
    Serialise {
        /// Root element of the document, such as `domain`.
        document: &'static str,
        /// quick-xml's error.
        #[source]
        source: quick_xml::SeError,
    },
    /// quick-xml failed to parse the document.
    #[error("parse {document} XML")]
    Parse {
        /// Root element of the document, such as `domain`.
        document: &'static str,
        /// quick-xml's error.
        #[source]
        source: quick_xml::DeError,
    },
}

/// A document with a known root element.
pub trait Document: Serialize + DeserializeOwned {
    /// Name of the root element, such as `domain`.
    const ROOT: &'static str;
}

/// Returns true for characters that XML 1.0 allows in a document.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Checks that `value` can be written into an XML 1.0 document. The
/// error quotes up to 40 characters on each side of the first bad one.
pub fn check_xml_text(value: &str) -> Result<(), XmlError> {
    let Some((index, character)) = value.char_indices().find(|(_, c)| !is_xml_char(*c)) else {
        return Ok(());
    };
    let before: String = value[..index].chars().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
    let after: String = value[index..].chars().take(41).collect();
    Err(XmlError::Unrepresentable { context: before + &after, character })
}

/// Serialises `document` to XML, rejecting characters XML cannot carry.
pub fn to_xml<D: Document>(document: &D) -> Result<String, XmlError> {
    let text = quick_xml::se::to_string(document)
        .map_err(|source| XmlError::Serialise { document: D::ROOT, source })?;
    // Escaping leaves every character as it is, so a forbidden one in any
    // value shows up in the output.
    check_xml_text(&text)?;
    Ok(text)
}

/// Parses `text` (as libvirt's XMLDesc calls return it) into a document.
pub fn from_xml<D: Document>(text: &str) -> Result<D, XmlError> {
    quick_xml::de::from_str(text).map_err(|source| XmlError::Parse { document: D::ROOT, source })
}

/// An element with no attributes and no content, such as `<acpi/>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Empty {}
