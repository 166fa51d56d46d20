//! The worst-case cost of one CEL expression, computed as cel-go's `checker.Cost` computes it
//! with the API server's estimator (apiserver's `library.CostEstimator` over the sizes of
//! [`super::decl`]): the same walk of the same macro-expanded syntax tree, the same size
//! propagation (paths from `self`, list and map entry sizes), the same per-call costs.
//!
//! The types cel-go's checker infers are inferred here for what the costs depend on: whether a
//! selection reads a struct or a map, which overload a `+`, a comparison or an `in` is, what a
//! call returns. A function this estimator does not know makes the cost unknown (the largest
//! value), so a rule using one is refused rather than let through: conservative, never lenient.
//!
//! The walk is in three parts beside this file: `types` (the checker's types), `walk` (the
//! cost of each expression, comprehensions included) and `functions` (each function's cost, the
//! Kubernetes libraries' too); sizes and paths, which all three read, are here.

use std::collections::HashMap;

use kube::core::cel::cel::{
    Program,
    common::ast::{CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue},
};

use super::decl::{Decl, DeclKind};

mod functions;
mod types;
mod walk;

use types::Ty;

const STRING_TRAVERSAL: f64 = 0.1;
const REGEX_LENGTH: f64 = 0.25;
const SELECT_AND_IDENT: u64 = 1;
const LIST_CREATE: u64 = 10;
const MAP_CREATE: u64 = 30;
const STRUCT_CREATE: u64 = 40;
const MAX_FORMAT_SIZE: u64 = 64;
const MAX_NAME_FORMAT_REGEX_SIZE: f64 = 128.0;

/// A `[min, max]` size or cost, saturating as cel-go's is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub min: u64,
    pub max: u64,
}

impl Range {
    pub const UNKNOWN: Range = Range {
        min: 0,
        max: u64::MAX,
    };

    pub fn fixed(n: u64) -> Range {
        Range { min: n, max: n }
    }

    fn add(self, o: Range) -> Range {
        Range {
            min: self.min.saturating_add(o.min),
            max: self.max.saturating_add(o.max),
        }
    }

    fn multiply(self, o: Range) -> Range {
        Range {
            min: self.min.saturating_mul(o.min),
            max: self.max.saturating_mul(o.max),
        }
    }

    fn factor(self, f: f64) -> Range {
        Range {
            min: by_factor(self.min, f),
            max: by_factor(self.max, f),
        }
    }

    fn union(self, o: Range) -> Range {
        Range {
            min: self.min.min(o.min),
            max: self.max.max(o.max),
        }
    }
}

/// cel-go's `multiplyByCostFactor`: the ceiling, saturating at 2^64 - 1.
fn by_factor(x: u64, f: f64) -> u64 {
    let xf = x as f64;
    if xf > 0.0 && f > 0.0 && xf > u64::MAX as f64 / f {
        return u64::MAX;
    }
    let c = (xf * f).ceil();
    if c >= 18_446_744_073_709_551_616.0 {
        u64::MAX
    } else {
        c as u64
    }
}

/// The size of the entries of a list or map value.
#[derive(Clone, Copy, Debug, PartialEq)]
struct EntrySize {
    list: bool,
    key: Range,
    val: Range,
}

#[derive(Clone, Debug)]
struct Local {
    path: Option<Vec<String>>,
    size: Option<Range>,
    entry: Option<EntrySize>,
}

/// Estimates the worst-case cost of `expression`, a rule on a node of type `root`; `None` when
/// the expression does not parse. Functions the estimator does not know count as
/// [`u64::MAX`].
pub fn estimate(expression: &str, root: &Decl) -> Option<u64> {
    let program = Program::compile(expression).ok()?;
    let mut coster = Coster {
        root,
        types: HashMap::new(),
        paths: HashMap::new(),
        sizes: HashMap::new(),
        entries: HashMap::new(),
        locals: HashMap::new(),
        scope: HashMap::new(),
    };
    let ast = program.expression();
    coster.check(ast);
    Some(coster.cost(ast).max)
}

struct Coster<'d> {
    root: &'d Decl,
    /// Type of every expression (cel-go's checker's type map).
    types: HashMap<u64, Ty<'d>>,
    paths: HashMap<u64, Option<Vec<String>>>,
    sizes: HashMap<u64, Range>,
    entries: HashMap<u64, EntrySize>,
    locals: HashMap<String, Vec<Local>>,
    /// Comprehension variable types during type checking.
    scope: HashMap<String, Vec<Ty<'d>>>,
}

fn is_accumulator(name: &str) -> bool {
    name == "@result" || name == "@__result__" || name == "__result__"
}

impl<'d> Coster<'d> {
    fn path(&self, e: &IdedExpr) -> Option<Vec<String>> {
        if let Expr::Ident(name) = &e.expr
            && let Some(local) = self.locals.get(name).and_then(|l| l.last())
        {
            return local.path.clone();
        }
        self.paths.get(&e.id).cloned().flatten()
    }

    fn literal_size(e: &IdedExpr) -> Option<Range> {
        let v = match &e.expr {
            Expr::Literal(l) => match l {
                LiteralValue::String(s) => s.inner().chars().count() as u64,
                LiteralValue::Bytes(b) => b.inner().len() as u64,
                _ => 1,
            },
            Expr::List(list) => list.elements.len() as u64,
            Expr::Map(map) => map.entries.len() as u64,
            _ => return None,
        };
        Some(Range::fixed(v))
    }

    /// The apiserver's size estimator: the declared type at `path` (the first element, `self`,
    /// skipped whatever it is).
    fn estimate_size(&self, path: &[String]) -> Option<Range> {
        let (_, rest) = path.split_first()?;
        let mut node = self.root;
        let key = Decl::map_key();
        let mut at_key = false;
        for name in rest {
            if at_key {
                return None;
            }
            match name.as_str() {
                "@items" | "@values" => node = node.elem()?,
                "@keys" => {
                    if !matches!(node.kind, DeclKind::Map(_)) {
                        return None;
                    }
                    at_key = true;
                }
                field => node = node.field(field)?,
            }
        }
        let max = if at_key {
            key.max_elements
        } else {
            node.max_elements
        };
        Some(Range { min: 0, max })
    }

    fn compute_size(&mut self, e: &IdedExpr) -> Option<Range> {
        if let Some(size) = self.sizes.get(&e.id) {
            return Some(*size);
        }
        if let Some(size) = Self::literal_size(e) {
            return Some(size);
        }
        if let Some(path) = self
            .paths
            .get(&e.id)
            .cloned()
            .flatten()
            .or_else(|| match &e.expr {
                Expr::Ident(_) => self.path(e),
                _ => None,
            })
            && let Some(size) = self.estimate_size(&path)
        {
            self.sizes.insert(e.id, size);
            return Some(size);
        }
        if self.ty(e).is_scalar() {
            return Some(Range::fixed(1));
        }
        if let Expr::Ident(name) = &e.expr
            && let Some(size) = self
                .locals
                .get(name)
                .and_then(|l| l.last())
                .and_then(|l| l.size)
        {
            return Some(size);
        }
        None
    }

    fn size_or_unknown(&mut self, e: &IdedExpr) -> Range {
        self.compute_size(e).unwrap_or(Range::UNKNOWN)
    }

    fn entry_size(&self, e: &IdedExpr) -> Option<EntrySize> {
        if let Some(size) = self.entries.get(&e.id) {
            return Some(*size);
        }
        if let Expr::Ident(name) = &e.expr {
            return self
                .locals
                .get(name)
                .and_then(|l| l.last())
                .and_then(|l| l.entry);
        }
        None
    }

    fn push_local(&mut self, name: &str, local: Local) {
        self.locals.entry(name.to_string()).or_default().push(local);
    }

    fn pop_local(&mut self, name: &str) {
        self.locals.get_mut(name).map(Vec::pop);
    }
}

/// Namespaced functions (`format.dns1123Label()`, `optional.of(x)`, `strings.quote(s)`) parse as
/// member calls on an identifier; cel-go resolves them as global functions with the qualified
/// name and nothing to cost for the "target".
const NAMESPACES: &[&str] = &[
    "format",
    "optional",
    "strings",
    "ip",
    "sets",
    "lists",
    "math",
    "base64",
    "jsonpatch",
    "cel",
];

fn qualified(call: &CallExpr) -> std::borrow::Cow<'_, CallExpr> {
    match call.target.as_deref().map(|t| &t.expr) {
        Some(Expr::Ident(ns)) if NAMESPACES.contains(&ns.as_str()) => {
            std::borrow::Cow::Owned(CallExpr {
                func_name: format!("{ns}.{}", call.func_name),
                target: None,
                args: call.args.clone(),
            })
        }
        _ => std::borrow::Cow::Borrowed(call),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cost(rule: &str, schema: serde_json::Value) -> u64 {
        let decl = Decl::of(&schema, false).unwrap();
        estimate(rule, &decl).unwrap()
    }

    #[test]
    fn the_building_blocks_cost_what_cel_go_says() {
        let s = json!({"type": "string", "maxLength": 32});
        // maxLength 32 is 128 bytes: (128 + 1) * 0.1 = 13 for the string, times 3 chars * 0.25
        // = 1 for the regex, plus 1 for reading self.
        assert_eq!(cost("self.matches('^a$')", s.clone()), 1 + 13);
        assert_eq!(cost("isCIDR(self)", s.clone()), 1 + 13);
        let list =
            json!({"type": "array", "maxItems": 8, "items": {"type": "string", "maxLength": 4}});
        // all(): 8 * (step: 1 for `x`, 1 for `@result`, 1 for &&... ) as cel-go counts it.
        assert!(cost("self.all(x, x == 'a')", list) > 8);
        assert_eq!(
            cost("self.unknownFunction()", s),
            u64::MAX,
            "an unknown function is unbounded"
        );
    }
}
