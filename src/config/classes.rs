//! Expectation classes in the configuration: each helper's per-class limits
//! (`ClassLimits`, in its registry entry's class order) and their UCI spelling —
//! `expect_max` / `expect_timeout` for a helper's only class, `expect_max_<class>` /
//! `expect_timeout_<class>` for one of several.

use crate::helpers::registry::{Builtin, MAX_CLASSES};

/// The configured limits of one expectation class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub expect_max: u32,
    pub expect_timeout: u32,
}

/// The limits of each expectation class of one helper, in its registry entry's class
/// order (so `[i]` is the limit of the class an expectation with `class: i` counts
/// against). Fixed size and `Copy`, like the rest of a registration's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassLimits {
    len: usize,
    items: [Limits; MAX_CLASSES],
}

impl ClassLimits {
    /// The registry's defaults for `b`'s classes.
    pub fn defaults(b: &Builtin) -> ClassLimits {
        let mut items = [Limits::default(); MAX_CLASSES];
        for (item, class) in items.iter_mut().zip(b.classes) {
            *item = Limits {
                expect_max: class.expect_max,
                expect_timeout: class.expect_timeout,
            };
        }
        ClassLimits {
            len: b.classes.len().min(MAX_CLASSES),
            items,
        }
    }

    pub fn as_slice(&self) -> &[Limits] {
        self.items.get(..self.len).unwrap_or(&[])
    }

    pub fn as_mut_slice(&mut self) -> &mut [Limits] {
        self.items.get_mut(..self.len).unwrap_or(&mut [])
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl core::ops::Index<usize> for ClassLimits {
    type Output = Limits;
    fn index(&self, class: usize) -> &Limits {
        &self.as_slice()[class]
    }
}

impl core::ops::IndexMut<usize> for ClassLimits {
    fn index_mut(&mut self, class: usize) -> &mut Limits {
        &mut self.as_mut_slice()[class]
    }
}

/// The two limits a class has, as UCI options spell them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ExpectField {
    Max,
    Timeout,
}

impl ExpectField {
    const ALL: [ExpectField; 2] = [ExpectField::Max, ExpectField::Timeout];

    fn option(self) -> &'static str {
        match self {
            ExpectField::Max => "expect_max",
            ExpectField::Timeout => "expect_timeout",
        }
    }

    fn get(self, l: &Limits) -> u32 {
        match self {
            ExpectField::Max => l.expect_max,
            ExpectField::Timeout => l.expect_timeout,
        }
    }
}

/// The UCI option for `field` of class `class` of `b`: the bare name (`expect_max`)
/// when the helper has one class, `expect_max_<class>` when it has several.
fn class_option(b: &Builtin, class: usize, field: ExpectField) -> String {
    match b.classes.get(class) {
        Some(c) if b.classes.len() > 1 => format!("{}_{}", field.option(), c.name),
        _ => field.option().into(),
    }
}

/// Which class limit the option `name` of a section for helper `b` sets: Ok(None) when it
/// is no class option at all, an error when it is one spelled for another class count
/// or naming a class the helper does not have.
pub(super) fn parse_class_option(
    b: &Builtin,
    name: &str,
) -> Result<Option<(ExpectField, usize)>, String> {
    let classes = || {
        b.classes
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    for field in ExpectField::ALL {
        let base = field.option();
        if name == base {
            if b.classes.len() == 1 {
                return Ok(Some((field, 0)));
            }
            return Err(format!(
                "helper {} has {} expectation classes ({}): use {base}_<class>",
                b.name,
                b.classes.len(),
                classes()
            ));
        }
        let Some(class) = name.strip_prefix(base).and_then(|r| r.strip_prefix('_')) else {
            continue;
        };
        if b.classes.len() == 1 {
            return Err(format!(
                "helper {} has one expectation class: use {base}",
                b.name
            ));
        }
        return match b.class(class) {
            Some(i) => Ok(Some((field, i))),
            None => Err(format!(
                "helper {} has no expectation class {class:?} ({})",
                b.name,
                classes()
            )),
        };
    }
    Ok(None)
}

/// The limits of each class, as UCI option names and values, for printing and logs:
/// `expect_max 1 expect_timeout 300`, or per class for a helper with several.
pub fn class_settings(b: &Builtin, limits: &ClassLimits) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for (i, l) in limits.as_slice().iter().enumerate() {
        for field in ExpectField::ALL {
            out.push((class_option(b, i, field), field.get(l)));
        }
    }
    out
}
