//! The cost of each function: cel-go's standard library and the API server's libraries
//! (`library.CostEstimator`), by name. A function not known here costs `u64::MAX`.

use super::*;

impl<'d> Coster<'d> {
    /// The cost of the call itself (plus its arguments', not its target's) and the size of what
    /// it returns, when known.
    pub(super) fn function_cost(
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
    pub(super) fn library_cost(
        &mut self,
        e: &IdedExpr,
        call: &CallExpr,
    ) -> Option<(Range, Option<Range>)> {
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

/// The functions whose cost is cel-go's default (1 plus the arguments'): anything else is
/// unknown here and estimated as unbounded.
pub(super) fn known_function(name: &str) -> bool {
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
