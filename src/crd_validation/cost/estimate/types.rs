//! The types cel-go's checker infers, as far as costs depend on them: whether a selection
//! reads a struct or a map, which overload an operator is, what a call returns.

use super::*;

/// A static type, as far as costs need one.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Ty<'d> {
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
    pub(super) fn of(decl: &'d Decl) -> Ty<'d> {
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

    pub(super) fn is_scalar(&self) -> bool {
        match self {
            Ty::Bool | Ty::Double | Ty::Duration | Ty::Int | Ty::Timestamp | Ty::Uint => true,
            Ty::Optional(inner) => inner.is_scalar(),
            _ => false,
        }
    }

    pub(super) fn is_list(&self) -> bool {
        matches!(self, Ty::List(_))
    }
}

impl<'d> Coster<'d> {
    pub(super) fn ty(&self, e: &IdedExpr) -> Ty<'d> {
        self.types.get(&e.id).cloned().unwrap_or(Ty::Dyn)
    }

    pub(super) fn check(&mut self, e: &IdedExpr) -> Ty<'d> {
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

    pub(super) fn check_comprehension(&mut self, comp: &ComprehensionExpr) -> Ty<'d> {
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

    pub(super) fn check_call(&mut self, call: &CallExpr) -> Ty<'d> {
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
}
