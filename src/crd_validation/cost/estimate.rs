//! The worst-case cost of one CEL expression, computed as cel-go's `checker.Cost` computes it
//! with the API server's estimator (apiserver's `library.CostEstimator` over the sizes of
//! [`super::decl`]): the same walk of the same macro-expanded syntax tree, the same size
//! propagation (paths from `self`, list and map entry sizes), the same per-call costs.
//!
//! The types cel-go's checker infers are inferred here for what the costs depend on: whether a
//! selection reads a struct or a map, which overload a `+`, a comparison or an `in` is, what a
//! call returns. A function this estimator does not know makes the cost unknown (the largest
//! value), so a rule using one is refused rather than let through: conservative, never lenient.

use std::collections::HashMap;

use kube::core::cel::cel::{
    Program,
    common::ast::{CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, LiteralValue},
};

use super::decl::{Decl, DeclKind};

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

/// A static type, as far as costs need one.
#[derive(Clone, Debug, PartialEq)]
enum Ty<'d> {
    Dyn,
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Duration,
    Timestamp,
    Null,
    Type,
    List(Box<Ty<'d>>),
    Map(Box<Ty<'d>>, Box<Ty<'d>>),
    Object(&'d Decl),
    Opaque(&'static str),
    Optional(Box<Ty<'d>>),
}

impl<'d> Ty<'d> {
    fn of(decl: &'d Decl) -> Ty<'d> {
        match &decl.kind {
            DeclKind::Bool => Ty::Bool,
            DeclKind::Int => Ty::Int,
            DeclKind::Double => Ty::Double,
            DeclKind::String => Ty::String,
            DeclKind::Bytes => Ty::Bytes,
            DeclKind::Duration => Ty::Duration,
            DeclKind::Timestamp => Ty::Timestamp,
            DeclKind::List(elem) => Ty::List(Box::new(Ty::of(elem))),
            DeclKind::Map(elem) => Ty::Map(Box::new(Ty::String), Box::new(Ty::of(elem))),
            DeclKind::Object(_) => Ty::Object(decl),
            DeclKind::Dyn => Ty::Dyn,
        }
    }

    fn is_scalar(&self) -> bool {
        match self {
            Ty::Bool | Ty::Double | Ty::Duration | Ty::Int | Ty::Timestamp | Ty::Uint => true,
            Ty::Optional(inner) => inner.is_scalar(),
            _ => false,
        }
    }

    fn is_list(&self) -> bool {
        matches!(self, Ty::List(_))
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
    // ---- types (cel-go's checker, for what costs depend on) ----

    fn ty(&self, e: &IdedExpr) -> Ty<'d> {
        self.types.get(&e.id).cloned().unwrap_or(Ty::Dyn)
    }

    fn check(&mut self, e: &IdedExpr) -> Ty<'d> {
        let t = match &e.expr {
            Expr::Literal(l) => match l {
                LiteralValue::Boolean(_) => Ty::Bool,
                LiteralValue::Bytes(_) => Ty::Bytes,
                LiteralValue::Double(_) => Ty::Double,
                LiteralValue::Int(_) => Ty::Int,
                LiteralValue::Null => Ty::Null,
                LiteralValue::String(_) => Ty::String,
                LiteralValue::UInt(_) => Ty::Uint,
            },
            Expr::Ident(name) => match self.scope.get(name).and_then(|s| s.last()) {
                Some(t) => t.clone(),
                None if name == "self" || name == "oldSelf" => Ty::of(self.root),
                None => match name.as_str() {
                    "int" | "uint" | "double" | "string" | "bytes" | "bool" | "list" | "map"
                    | "null_type" | "type" => Ty::Type,
                    _ => Ty::Dyn,
                },
            },
            Expr::Select(sel) => {
                let operand = self.check(&sel.operand);
                if sel.test {
                    Ty::Bool
                } else {
                    match operand {
                        Ty::Object(decl) => decl.field(&sel.field).map_or(Ty::Dyn, Ty::of),
                        Ty::Map(_, v) => *v,
                        _ => Ty::Dyn,
                    }
                }
            }
            Expr::List(list) => {
                let types: Vec<Ty> = list.elements.iter().map(|el| self.check(el)).collect();
                let elem = match types.split_first() {
                    Some((first, rest)) if rest.iter().all(|t| t == first) => first.clone(),
                    Some(_) => Ty::Dyn,
                    None => Ty::Dyn,
                };
                Ty::List(Box::new(elem))
            }
            Expr::Map(map) => {
                let mut key = None;
                let mut val = None;
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(m) = &entry.expr {
                        key = Some(self.check(&m.key));
                        val = Some(self.check(&m.value));
                    }
                }
                Ty::Map(
                    Box::new(key.unwrap_or(Ty::Dyn)),
                    Box::new(val.unwrap_or(Ty::Dyn)),
                )
            }
            Expr::Struct(s) => {
                for entry in &s.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        self.check(&f.value);
                    }
                }
                Ty::Dyn
            }
            Expr::Comprehension(comp) => self.check_comprehension(comp),
            Expr::Call(call) => self.check_call(&qualified(call)),
            _ => Ty::Dyn,
        };
        self.types.insert(e.id, t.clone());
        t
    }

    fn check_comprehension(&mut self, comp: &ComprehensionExpr) -> Ty<'d> {
        let range = self.check(&comp.iter_range);
        let mut accu = self.check(&comp.accu_init);
        let (first, second) = match &range {
            Ty::List(e) => (
                if comp.iter_var2.is_some() {
                    Ty::Int
                } else {
                    (**e).clone()
                },
                (**e).clone(),
            ),
            Ty::Map(k, v) => ((**k).clone(), (**v).clone()),
            _ => (Ty::Dyn, Ty::Dyn),
        };
        self.scope
            .entry(comp.iter_var.clone())
            .or_default()
            .push(first);
        if let Some(v2) = &comp.iter_var2 {
            self.scope.entry(v2.clone()).or_default().push(second);
        }
        // An empty list accumulator takes the element type the step gives it (cel-go unifies
        // the accumulator with the step): check the step twice.
        for _ in 0..2 {
            self.scope
                .entry(comp.accu_var.clone())
                .or_default()
                .push(accu.clone());
            self.check(&comp.loop_cond);
            let step = self.check(&comp.loop_step);
            self.scope.get_mut(&comp.accu_var).map(Vec::pop);
            if accu == Ty::List(Box::new(Ty::Dyn)) && step.is_list() {
                accu = step;
            } else {
                break;
            }
        }
        self.scope.get_mut(&comp.iter_var).map(Vec::pop);
        if let Some(v2) = &comp.iter_var2 {
            self.scope.get_mut(v2).map(Vec::pop);
        }
        self.scope
            .entry(comp.accu_var.clone())
            .or_default()
            .push(accu);
        let result = self.check(&comp.result);
        self.scope.get_mut(&comp.accu_var).map(Vec::pop);
        result
    }

    fn check_call(&mut self, call: &CallExpr) -> Ty<'d> {
        let target = call.target.as_ref().map(|t| self.check(t));
        let args: Vec<Ty> = call.args.iter().map(|a| self.check(a)).collect();
        let arg = |i: usize| args.get(i).cloned().unwrap_or(Ty::Dyn);
        let name = call.func_name.as_str();
        match (name, target.as_ref()) {
            (
                "_&&_"
                | "_||_"
                | "!_"
                | "@not_strictly_false"
                | "_==_"
                | "_!=_"
                | "_<_"
                | "_<=_"
                | "_>_"
                | "_>=_"
                | "@in",
                _,
            ) => Ty::Bool,
            (
                "matches"
                | "startsWith"
                | "endsWith"
                | "contains"
                | "isCIDR"
                | "isIP"
                | "isURL"
                | "isQuantity"
                | "isSemver"
                | "isSorted"
                | "hasValue"
                | "isLoopback"
                | "isUnspecified"
                | "isLinkLocalMulticast"
                | "isLinkLocalUnicast"
                | "isGlobalUnicast"
                | "containsIP"
                | "containsCIDR"
                | "isInteger"
                | "isGreaterThan"
                | "isLessThan"
                | "ip.isCanonical",
                _,
            ) => Ty::Bool,
            (
                "size" | "int" | "indexOf" | "lastIndexOf" | "family" | "prefixLength" | "sign"
                | "compareTo" | "asInteger" | "major" | "minor" | "patch" | "getFullYear"
                | "getMonth" | "getDayOfYear" | "getDayOfMonth" | "getDate" | "getDayOfWeek"
                | "getHours" | "getMinutes" | "getSeconds" | "getMilliseconds",
                _,
            ) => Ty::Int,
            ("uint", _) => Ty::Uint,
            ("double" | "asApproximateFloat", _) => Ty::Double,
            (
                "string"
                | "charAt"
                | "lowerAscii"
                | "upperAscii"
                | "replace"
                | "substring"
                | "trim"
                | "reverse"
                | "format"
                | "strings.quote"
                | "join"
                | "find"
                | "getScheme"
                | "getHostname"
                | "getHost"
                | "getPort"
                | "getEscapedPath"
                | "jsonpatch.escapeKey",
                _,
            ) => Ty::String,
            ("bytes", _) => Ty::Bytes,
            ("duration", _) => Ty::Duration,
            ("timestamp", _) => Ty::Timestamp,
            ("dyn", _) => Ty::Dyn,
            ("type", _) => Ty::Type,
            ("split" | "findAll", _) => Ty::List(Box::new(Ty::String)),
            ("getQuery", _) => Ty::Map(
                Box::new(Ty::String),
                Box::new(Ty::List(Box::new(Ty::String))),
            ),
            ("ip", Some(_)) => Ty::Opaque("net.IP"),
            ("ip", None) => Ty::Opaque("net.IP"),
            ("cidr" | "masked", _) => Ty::Opaque("net.CIDR"),
            ("url", _) => Ty::Opaque("kubernetes.URL"),
            ("quantity" | "add" | "sub", _) => Ty::Opaque("kubernetes.Quantity"),
            ("semver", _) => Ty::Opaque("kubernetes.Semver"),
            ("validate", _) => Ty::Optional(Box::new(Ty::List(Box::new(Ty::String)))),
            ("format.named", _) => Ty::Optional(Box::new(Ty::Opaque("kubernetes.NamedFormat"))),
            (n, None) if n.starts_with("format.") => Ty::Opaque("kubernetes.NamedFormat"),
            ("value" | "orValue", Some(Ty::Optional(inner))) => (**inner).clone(),
            ("optional.of" | "optional.ofNonZeroValue", _) => Ty::Optional(Box::new(arg(0))),
            ("optional.none", _) => Ty::Optional(Box::new(Ty::Dyn)),
            ("sum" | "min" | "max", Some(Ty::List(e))) => (**e).clone(),
            ("_?_:_", _) => {
                let (a, b) = (arg(1), arg(2));
                if a == b { a } else { Ty::Dyn }
            }
            ("_[_]", _) => match arg(0) {
                Ty::List(e) => *e,
                Ty::Map(_, v) => *v,
                _ => Ty::Dyn,
            },
            ("_+_", _) => match (arg(0), arg(1)) {
                (Ty::List(a), Ty::List(b)) => {
                    if *a == Ty::Dyn {
                        Ty::List(b)
                    } else if a == b || *b == Ty::Dyn {
                        Ty::List(a)
                    } else {
                        Ty::List(Box::new(Ty::Dyn))
                    }
                }
                (Ty::Timestamp, _) | (_, Ty::Timestamp) => Ty::Timestamp,
                (a, _) => a,
            },
            ("_-_", _) => match (arg(0), arg(1)) {
                (Ty::Timestamp, Ty::Timestamp) => Ty::Duration,
                (a, _) => a,
            },
            ("_*_" | "_/_" | "_%_" | "-_", _) => arg(0),
            _ => Ty::Dyn,
        }
    }

    // ---- sizes and paths (cel-go's coster) ----

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

    // ---- costs ----

    fn cost(&mut self, e: &IdedExpr) -> Range {
        match &e.expr {
            Expr::Literal(_) => Range::fixed(0),
            Expr::Ident(name) => {
                let path = match self.locals.get(name).and_then(|l| l.last()) {
                    Some(local) => local.path.clone(),
                    None => Some(vec![name.clone()]),
                };
                self.paths.insert(e.id, path);
                Range::fixed(SELECT_AND_IDENT)
            }
            Expr::Select(sel) => {
                if sel.test {
                    // The API server's environment: has() costs nothing of its own.
                    return self.cost(&sel.operand);
                }
                let mut sum = self.cost(&sel.operand);
                if matches!(self.ty(&sel.operand), Ty::Object(_) | Ty::Map(..)) {
                    sum = sum.add(Range::fixed(SELECT_AND_IDENT));
                }
                let path = self.path(&sel.operand).map(|mut p| {
                    p.push(sel.field.clone());
                    p
                });
                self.paths.insert(e.id, path);
                sum
            }
            Expr::Call(call) => self.cost_call(e, &qualified(call)),
            Expr::List(list) => {
                let mut sum = Range::fixed(0);
                let mut item = if list.elements.is_empty() {
                    Range { min: 0, max: 0 }
                } else {
                    Range {
                        min: u64::MAX,
                        max: 0,
                    }
                };
                for el in &list.elements {
                    sum = sum.add(self.cost(el));
                    let size = self.size_or_unknown(el);
                    item = item.union(size);
                }
                self.entries.insert(
                    e.id,
                    EntrySize {
                        list: true,
                        key: Range::fixed(1),
                        val: item,
                    },
                );
                sum.add(Range::fixed(LIST_CREATE))
            }
            Expr::Map(map) => {
                let mut sum = Range::fixed(0);
                let empty = map.entries.is_empty();
                let mut key = Range {
                    min: if empty { 0 } else { u64::MAX },
                    max: 0,
                };
                let mut val = key;
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(m) = &entry.expr {
                        sum = sum.add(self.cost(&m.key)).add(self.cost(&m.value));
                        let k = self.size_or_unknown(&m.key);
                        let v = self.size_or_unknown(&m.value);
                        key = key.union(k);
                        val = val.union(v);
                    }
                }
                self.entries.insert(
                    e.id,
                    EntrySize {
                        list: false,
                        key,
                        val,
                    },
                );
                sum.add(Range::fixed(MAP_CREATE))
            }
            Expr::Struct(s) => {
                let mut sum = Range::fixed(STRUCT_CREATE);
                for entry in &s.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        sum = sum.add(self.cost(&f.value));
                    }
                }
                sum
            }
            Expr::Comprehension(comp) => {
                if is_bind(comp) {
                    self.cost_bind(e, comp)
                } else {
                    self.cost_comprehension(e, comp)
                }
            }
            _ => Range::fixed(0),
        }
    }

    fn cost_comprehension(&mut self, e: &IdedExpr, comp: &ComprehensionExpr) -> Range {
        let mut sum = self.cost(&comp.iter_range);
        sum = sum.add(self.cost(&comp.accu_init));
        let accu_local = Local {
            path: self.path(&comp.accu_init),
            size: self.compute_size(&comp.accu_init),
            entry: self.entry_size(&comp.accu_init),
        };
        self.push_local(&comp.accu_var, accu_local);
        let range_entry = self.entry_size(&comp.iter_range);
        let range_path = self.path(&comp.iter_range).unwrap_or_default();
        let container_list = match range_entry {
            Some(entry) => entry.list,
            None => self.ty(&comp.iter_range).is_list(),
        };
        let with = |suffix: &str| {
            let mut p = range_path.clone();
            p.push(suffix.to_string());
            Some(p)
        };
        match &comp.iter_var2 {
            Some(v2) => {
                let (ks, kp) = if container_list {
                    ("@indices", "@indices")
                } else {
                    ("@keys", "@keys")
                };
                let _ = ks;
                self.push_local(
                    &comp.iter_var,
                    Local {
                        path: with(kp),
                        size: range_entry.map(|r| r.key),
                        entry: None,
                    },
                );
                let vp = if container_list { "@items" } else { "@values" };
                self.push_local(
                    v2,
                    Local {
                        path: with(vp),
                        size: range_entry.map(|r| r.val),
                        entry: None,
                    },
                );
            }
            None => {
                let (size, sub) = if container_list {
                    (range_entry.map(|r| r.val), "@items")
                } else {
                    (range_entry.map(|r| r.key), "@keys")
                };
                self.push_local(
                    &comp.iter_var,
                    Local {
                        path: with(sub),
                        size,
                        entry: None,
                    },
                );
            }
        }
        let loop_cost = self.cost(&comp.loop_cond);
        let step_cost = self.cost(&comp.loop_step);
        self.pop_local(&comp.iter_var);
        if let Some(v2) = &comp.iter_var2 {
            self.pop_local(v2);
        }
        sum = sum.add(self.cost(&comp.result));
        self.pop_local(&comp.accu_var);
        let count = self.size_or_unknown(&comp.iter_range);
        sum = sum.add(count.multiply(step_cost.add(loop_cost)));
        match &comp.accu_init.expr {
            Expr::Literal(_) => {
                if let Some(size) = self.compute_size(&comp.accu_init) {
                    self.sizes.insert(e.id, size);
                }
            }
            Expr::List(_) | Expr::Map(_) => {
                self.sizes.insert(e.id, count);
                if let Some(entry) = self.entry_size(&comp.loop_step) {
                    self.entries.insert(e.id, entry);
                }
            }
            _ => {}
        }
        sum
    }

    fn cost_bind(&mut self, e: &IdedExpr, comp: &ComprehensionExpr) -> Range {
        let mut sum = self.cost(&comp.iter_range);
        sum = sum.add(self.cost(&comp.accu_init));
        let local = Local {
            path: self.path(&comp.accu_init),
            size: self.compute_size(&comp.accu_init),
            entry: self.entry_size(&comp.accu_init),
        };
        self.push_local(&comp.accu_var, local);
        sum = sum.add(self.cost(&comp.result));
        self.pop_local(&comp.accu_var);
        if let Some(size) = self.compute_size(&comp.result) {
            self.sizes.insert(e.id, size);
        }
        if let Some(entry) = self.entry_size(&comp.result) {
            self.entries.insert(e.id, entry);
        }
        sum
    }

    fn cost_call(&mut self, e: &IdedExpr, call: &CallExpr) -> Range {
        if call.func_name == "dyn" && call.args.len() == 1 {
            let cost = self.cost(&call.args[0]);
            if let Some(size) = self.compute_size(&call.args[0]) {
                self.sizes.insert(e.id, size);
            }
            if let Some(entry) = self.entry_size(&call.args[0]) {
                self.entries.insert(e.id, entry);
            }
            return Range::fixed(1).add(cost);
        }
        let arg_costs: Vec<Range> = call.args.iter().map(|a| self.cost(a)).collect();
        let mut sum = Range::fixed(0);
        if let Some(target) = &call.target {
            sum = sum.add(self.cost(target));
        }
        let (cost, result_size) = self.function_cost(e, call, &arg_costs);
        let mut result_size = result_size;
        match (
            call.func_name.as_str(),
            self.ty(&call.args.first().cloned().unwrap_or_default()),
        ) {
            ("_[_]", Ty::List(_)) => {
                result_size = self.entry_size(&call.args[0]).map(|r| r.val);
                let path = self.path(&call.args[0]).map(|mut p| {
                    p.push("@items".into());
                    p
                });
                self.paths.insert(e.id, path);
            }
            ("_[_]", Ty::Map(..)) => {
                result_size = self.entry_size(&call.args[0]).map(|r| r.val);
                let path = self.path(&call.args[0]).map(|mut p| {
                    p.push("@values".into());
                    p
                });
                self.paths.insert(e.id, path);
            }
            _ => {}
        }
        let result_size = result_size.or_else(|| self.compute_size(e));
        if let Some(size) = result_size {
            self.sizes.insert(e.id, size);
        }
        sum.add(cost)
    }

    /// The cost of the call itself (plus its arguments', not its target's) and the size of what
    /// it returns, when known.
    fn function_cost(
        &mut self,
        e: &IdedExpr,
        call: &CallExpr,
        arg_costs: &[Range],
    ) -> (Range, Option<Range>) {
        let args_sum = arg_costs.iter().fold(Range::fixed(0), |s, c| s.add(*c));
        let name = call.func_name.as_str();
        let target = call.target.as_deref();
        if let Some((cost, size)) = self.library_cost(e, call) {
            return (cost.add(args_sum), size);
        }
        let arg_ty = |c: &Self, i: usize| call.args.get(i).map_or(Ty::Dyn, |a| c.ty(a));
        let string_or_bytes = |t: &Ty| matches!(t, Ty::String | Ty::Bytes);
        match name {
            "format" if target.is_some() => {
                let size = self.size_or_unknown(target.unwrap_or(e));
                return (size.factor(STRING_TRAVERSAL).add(args_sum), None);
            }
            "strings.quote" if call.args.len() == 1 => {
                let size = self.size_or_unknown(&call.args[0]);
                let result = Range {
                    min: size.min.saturating_add(2),
                    max: size.max.saturating_mul(2).saturating_add(2),
                };
                return (size.factor(STRING_TRAVERSAL).add(args_sum), Some(result));
            }
            "bytes" if call.args.len() == 1 && arg_ty(self, 0) == Ty::String => {
                let size = self.size_or_unknown(&call.args[0]);
                let result = Range {
                    min: size.min,
                    max: size.max.saturating_mul(4),
                };
                return (size.factor(STRING_TRAVERSAL).add(args_sum), Some(result));
            }
            "string" if call.args.len() == 1 && arg_ty(self, 0) == Ty::Bytes => {
                let size = self.size_or_unknown(&call.args[0]);
                let result = Range {
                    min: size.min / 4,
                    max: size.max,
                };
                return (size.factor(STRING_TRAVERSAL).add(args_sum), Some(result));
            }
            "startsWith" | "endsWith"
                if call.args.len() == 1 && target.is_some_and(|t| self.ty(t) == Ty::String) =>
            {
                let size = self.size_or_unknown(&call.args[0]);
                return (size.factor(STRING_TRAVERSAL).add(args_sum), None);
            }
            "@in" if call.args.len() == 2 && arg_ty(self, 1).is_list() => {
                let size = self.size_or_unknown(&call.args[1]);
                return (size.factor(1.0).add(args_sum), None);
            }
            "matches" if target.is_some() && call.args.len() == 1 => {
                let target = target.unwrap_or(e);
                let string = self
                    .size_or_unknown(target)
                    .add(Range::fixed(1))
                    .factor(STRING_TRAVERSAL);
                let regex = self.size_or_unknown(&call.args[0]).factor(REGEX_LENGTH);
                return (string.multiply(regex).add(args_sum), None);
            }
            "contains"
                if target.is_some_and(|t| self.ty(t) == Ty::String) && call.args.len() == 1 =>
            {
                let target = target.unwrap_or(e);
                let string = self.size_or_unknown(target).factor(STRING_TRAVERSAL);
                let sub = self.size_or_unknown(&call.args[0]).factor(STRING_TRAVERSAL);
                return (string.multiply(sub).add(args_sum), None);
            }
            "_||_" | "_&&_" => {
                let (lhs, rhs) = (arg_costs[0], arg_costs[1]);
                return (
                    Range {
                        min: lhs.min,
                        max: lhs.add(rhs).max,
                    },
                    None,
                );
            }
            "_?_:_" => {
                let size = {
                    let a = self.size_or_unknown(&call.args[1]);
                    let b = self.size_or_unknown(&call.args[2]);
                    a.union(b)
                };
                let entry = match (
                    self.entry_size(&call.args[1]),
                    self.entry_size(&call.args[2]),
                ) {
                    (Some(a), Some(b)) => Some(EntrySize {
                        list: a.list,
                        key: a.key.union(b.key),
                        val: a.val.union(b.val),
                    }),
                    _ => None,
                };
                if let Some(entry) = entry {
                    self.entries.insert(e.id, entry);
                }
                let cost = arg_costs[0].add(arg_costs[1].union(arg_costs[2]));
                return (cost, Some(size));
            }
            "_+_" if call.args.len() == 2 => {
                let (a, b) = (arg_ty(self, 0), arg_ty(self, 1));
                let kind = match (&a, &b) {
                    (Ty::String, Ty::String) => Some(false),
                    (Ty::Bytes, Ty::Bytes) => Some(false),
                    (Ty::List(_), Ty::List(_)) => Some(true),
                    _ => None,
                };
                if let Some(list) = kind {
                    let lhs = self.size_or_unknown(&call.args[0]);
                    let rhs = self.size_or_unknown(&call.args[1]);
                    let result = lhs.add(rhs);
                    if let (Some(x), Some(y)) = (
                        self.entry_size(&call.args[0]),
                        self.entry_size(&call.args[1]),
                    ) {
                        self.entries.insert(
                            e.id,
                            EntrySize {
                                list: x.list,
                                key: x.key.union(y.key),
                                val: x.val.union(y.val),
                            },
                        );
                    }
                    return if list {
                        (Range::fixed(1).add(args_sum), Some(result))
                    } else {
                        (result.factor(STRING_TRAVERSAL).add(args_sum), Some(result))
                    };
                }
            }
            "_<_" | "_>_" | "_<=_" | "_>=_" | "_==_" | "_!=_" => {
                let sized = matches!(name, "_==_" | "_!=_") || string_or_bytes(&arg_ty(self, 0));
                if sized && call.args.len() == 2 {
                    let lhs = self.size_or_unknown(&call.args[0]);
                    let rhs = self.size_or_unknown(&call.args[1]);
                    let smallest = lhs.max.min(rhs.max);
                    let min = u64::from(smallest > 0);
                    let cost = Range { min, max: smallest }.factor(STRING_TRAVERSAL);
                    return (cost.add(args_sum), None);
                }
            }
            _ => {}
        }
        if !known_function(name) {
            return (Range::UNKNOWN, None);
        }
        (Range::fixed(1).add(args_sum), None)
    }

    /// apiserver's `library.CostEstimator.EstimateCallCost`: the Kubernetes functions (and the
    /// string extensions it prices), by name.
    fn library_cost(&mut self, e: &IdedExpr, call: &CallExpr) -> Option<(Range, Option<Range>)> {
        let name = call.func_name.as_str();
        let target = call.target.as_deref();
        let args = &call.args;
        let one = Range::fixed(1);
        Some(match name {
            "check" => (Range::fixed(350_000), None),
            "serviceAccount" | "path" | "group" | "resource" | "subresource" | "namespace"
            | "name" | "allowed" | "reason" | "error" | "errored" => (one, None),
            "fieldSelector" | "labelSelector" if args.len() == 1 => {
                let size = self.size_or_unknown(&args[0]);
                let parse = size.factor(STRING_TRAVERSAL);
                let requirements = size
                    .factor(0.5)
                    .factor((LIST_CREATE + STRUCT_CREATE) as f64);
                (Range::fixed(LIST_CREATE).add(parse).add(requirements), None)
            }
            "isSorted" | "sum" | "max" | "min" | "indexOf" | "lastIndexOf" if target.is_some() => {
                let target = target?;
                let size = self.size_or_unknown(target);
                match self.ty(target) {
                    Ty::List(elem) => {
                        let mut el = one;
                        if matches!(*elem, Ty::String | Ty::Bytes) {
                            let mut p = self.path(target);
                            if let Some(p) = p.as_mut() {
                                p.push("@items".into());
                            }
                            let el_size = p
                                .as_deref()
                                .and_then(|p| self.estimate_size(p))
                                .unwrap_or(Range::UNKNOWN);
                            el = el.add(el_size.factor(STRING_TRAVERSAL));
                        }
                        (size.multiply(el), None)
                    }
                    _ => (size.factor(STRING_TRAVERSAL), None),
                }
            }
            "url" | "jsonpatch.escapeKey" if args.len() == 1 => {
                let size = self.size_or_unknown(&args[0]);
                (size.factor(STRING_TRAVERSAL), Some(size))
            }
            "lowerAscii" | "upperAscii" | "substring" | "trim" if target.is_some() => {
                let size = self.size_or_unknown(target?);
                (size.factor(STRING_TRAVERSAL), Some(size))
            }
            "replace" if target.is_some() && args.len() >= 2 => {
                let size = self.size_or_unknown(target?);
                let from = self.size_or_unknown(&args[0]);
                let to = self.size_or_unknown(&args[1]);
                let (mut count, mut retained) = (Range::fixed(0), Range::fixed(0));
                if from.min == 0 {
                    count.max = if size.max < u64::MAX {
                        size.max + 1
                    } else {
                        size.max
                    };
                    retained.max = size.max;
                } else if to.max <= from.min {
                    count.max = 0;
                    retained.max = size.max;
                } else {
                    count.max = (size.max as f64 / from.min as f64).ceil() as u64;
                }
                if from.max == 0 {
                    count.min = if size.min < u64::MAX {
                        size.min + 1
                    } else {
                        size.min
                    };
                    retained.min = size.min;
                } else if from.max <= to.min {
                    count.min = 0;
                    retained.min = size.min;
                } else {
                    count.min = (size.min as f64 / from.max as f64).ceil() as u64;
                }
                let result = count.multiply(to).add(retained);
                (size.factor(2.0 * STRING_TRAVERSAL), Some(result))
            }
            "split" if target.is_some() => {
                let size = self.size_or_unknown(target?);
                let mut max = size.max;
                if let Some(Expr::Literal(LiteralValue::Int(n))) = args.get(1).map(|a| &a.expr) {
                    max = u64::try_from(*n.inner()).unwrap_or(0);
                }
                (
                    size.factor(2.0 * STRING_TRAVERSAL),
                    Some(Range { min: 0, max }),
                )
            }
            "join" if target.is_some() => {
                let target = target?;
                let list = self.size_or_unknown(target);
                let mut size = Range::fixed(0);
                if let Ty::List(_) = self.ty(target) {
                    let mut p = self.path(target);
                    if let Some(p) = p.as_mut() {
                        p.push("@items".into());
                    }
                    let elem = p
                        .as_deref()
                        .and_then(|p| self.estimate_size(p))
                        .unwrap_or(Range::UNKNOWN);
                    size = list.multiply(elem);
                }
                if let Some(sep) = args.first() {
                    let sep = self.size_or_unknown(sep);
                    let separators = Range {
                        min: list.min.saturating_sub(1),
                        max: list.max.saturating_sub(1),
                    };
                    size = size.add(sep.multiply(separators));
                }
                (size.factor(STRING_TRAVERSAL), Some(size))
            }
            "find" | "findAll" if target.is_some() && !args.is_empty() => {
                let size = self.size_or_unknown(target?);
                let string = size.add(one).factor(STRING_TRAVERSAL);
                let regex = self.size_or_unknown(&args[0]).factor(REGEX_LENGTH);
                (
                    string.multiply(regex),
                    Some(Range {
                        min: 0,
                        max: size.max,
                    }),
                )
            }
            "cidr" | "isIP" | "isCIDR" if !args.is_empty() => (
                self.size_or_unknown(&args[0]).factor(STRING_TRAVERSAL),
                None,
            ),
            "ip" => {
                if target.is_some_and(|t| self.ty(t) == Ty::Opaque("net.CIDR")) {
                    (one, None)
                } else if !args.is_empty() {
                    (
                        self.size_or_unknown(&args[0]).factor(STRING_TRAVERSAL),
                        None,
                    )
                } else {
                    return None;
                }
            }
            "ip.isCanonical" if !args.is_empty() => (
                self.size_or_unknown(&args[0])
                    .factor(2.0 * STRING_TRAVERSAL),
                None,
            ),
            "masked"
            | "prefixLength"
            | "family"
            | "isUnspecified"
            | "isLoopback"
            | "isLinkLocalMulticast"
            | "isLinkLocalUnicast"
            | "isGlobalUnicast" => (one, None),
            "containsIP" | "containsCIDR" if !args.is_empty() => {
                let sz = Range { min: 4, max: 16 };
                let mut cost = sz.add(sz).factor(STRING_TRAVERSAL);
                if name == "containsCIDR" {
                    cost = cost.add(sz.factor(STRING_TRAVERSAL)).add(one);
                }
                if self.ty(&args[0]) == Ty::String {
                    cost = cost.add(self.size_or_unknown(&args[0]).factor(STRING_TRAVERSAL));
                }
                (cost, None)
            }
            "quantity" | "isQuantity" | "semver" | "isSemver" if !args.is_empty() => (
                self.size_or_unknown(&args[0]).factor(STRING_TRAVERSAL),
                None,
            ),
            "validate" if !args.is_empty() => {
                let size = self.size_or_unknown(&args[0]);
                let cost = size
                    .factor(STRING_TRAVERSAL)
                    .factor(MAX_NAME_FORMAT_REGEX_SIZE * REGEX_LENGTH);
                (cost, None)
            }
            "format.named" => (one, None),
            "sign" | "asInteger" | "isInteger" | "asApproximateFloat" | "isGreaterThan"
            | "isLessThan" | "compareTo" | "add" | "sub" | "major" | "minor" | "patch" => {
                (one, None)
            }
            "getScheme" | "getHostname" | "getHost" | "getPort" | "getEscapedPath" | "getQuery" => {
                (one, None)
            }
            "_==_" if args.len() == 2 => {
                let (lhs, rhs) = (self.ty(&args[0]), self.ty(&args[1]));
                if lhs != rhs {
                    return None;
                }
                match lhs {
                    Ty::Opaque(
                        "net.IP" | "net.CIDR" | "kubernetes.Quantity" | "kubernetes.Semver",
                    ) => (one, None),
                    Ty::Opaque("kubernetes.NamedFormat") => (
                        Range {
                            min: 1,
                            max: MAX_FORMAT_SIZE,
                        }
                        .factor(STRING_TRAVERSAL),
                        None,
                    ),
                    _ => return None,
                }
            }
            _ => {
                let _ = e;
                return None;
            }
        })
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

/// `cel.bind`: a comprehension over an empty list whose loop never runs.
fn is_bind(comp: &ComprehensionExpr) -> bool {
    matches!(&comp.iter_range.expr, Expr::List(l) if l.elements.is_empty())
        && matches!(&comp.loop_cond.expr, Expr::Literal(LiteralValue::Boolean(b)) if !*b.inner())
        && !is_accumulator(&comp.accu_var)
}

/// The functions whose cost is cel-go's default (1 plus the arguments'): anything else is
/// unknown here and estimated as unbounded.
fn known_function(name: &str) -> bool {
    const DEFAULT_COST: &[&str] = &[
        "@not_strictly_false",
        "!_",
        "-_",
        "_+_",
        "_-_",
        "_*_",
        "_/_",
        "_%_",
        "_<_",
        "_<=_",
        "_>_",
        "_>=_",
        "_==_",
        "_!=_",
        "@in",
        "_[_]",
        "_?_:_",
        "size",
        "int",
        "uint",
        "double",
        "string",
        "bytes",
        "bool",
        "duration",
        "timestamp",
        "type",
        "dyn",
        "getFullYear",
        "getMonth",
        "getDayOfYear",
        "getDayOfMonth",
        "getDate",
        "getDayOfWeek",
        "getHours",
        "getMinutes",
        "getSeconds",
        "getMilliseconds",
        "charAt",
        "reverse",
        "hasValue",
        "value",
        "orValue",
        "optional.of",
        "optional.ofNonZeroValue",
        "optional.none",
        "or",
        "isURL",
        "matches",
        "startsWith",
        "endsWith",
        "contains",
        "format",
        "strings.quote",
    ];
    DEFAULT_COST.contains(&name) || name.starts_with("format.")
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
