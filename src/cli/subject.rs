//! The object a command names (`faultline report`, `faultline abort`), as kubectl takes a
//! name: `NAME` (an experiment) or `KIND/NAME`.

/// What a command names: an experiment, a game day or a schedule.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Subject {
    Experiment(String),
    GameDay(String),
    Schedule(String),
}

impl Subject {
    /// `NAME` (an experiment) or `KIND/NAME`, KIND as kubectl takes it: singular, plural or
    /// short name, with or without the group.
    pub(super) fn parse(arg: &str) -> Result<Subject, String> {
        let Some((kind, name)) = arg.split_once('/') else {
            return Ok(Subject::Experiment(arg.to_string()));
        };
        let kind = kind.to_ascii_lowercase();
        let kind = kind.strip_suffix(".faultline.dev").unwrap_or(&kind);
        let name = name.to_string();
        if name.is_empty() || name.contains('/') {
            return Err(format!(
                "{arg}: expected NAME or KIND/NAME, e.g. gameday/quarterly"
            ));
        }
        match kind {
            "chaosexperiment" | "chaosexperiments" | "experiment" | "experiments" | "fex" => {
                Ok(Subject::Experiment(name))
            }
            "gameday" | "gamedays" | "fgd" => Ok(Subject::GameDay(name)),
            "chaosschedule" | "chaosschedules" | "schedule" | "schedules" | "fsched" => {
                Ok(Subject::Schedule(name))
            }
            other => Err(format!(
                "{arg}: expected an experiment (NAME or fex/NAME), a game day (fgd/NAME) or a schedule (fsched/NAME), not {other}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Subject;

    #[test]
    fn a_subject_is_a_name_or_a_kind_and_a_name_as_kubectl_takes_them() {
        let experiment = |n: &str| Ok(Subject::Experiment(n.into()));
        assert_eq!(Subject::parse("kill-one"), experiment("kill-one"));
        assert_eq!(Subject::parse("fex/kill-one"), experiment("kill-one"));
        assert_eq!(
            Subject::parse("chaosexperiments.faultline.dev/kill-one"),
            experiment("kill-one")
        );
        assert_eq!(
            Subject::parse("GameDay/drill"),
            Ok(Subject::GameDay("drill".into()))
        );
        assert_eq!(
            Subject::parse("fgd/drill"),
            Ok(Subject::GameDay("drill".into()))
        );
        assert_eq!(
            Subject::parse("fsched/weekly"),
            Ok(Subject::Schedule("weekly".into()))
        );
        assert_eq!(
            Subject::parse("chaosschedule.faultline.dev/weekly"),
            Ok(Subject::Schedule("weekly".into()))
        );
        let refused = Subject::parse("pod/web-0").unwrap_err();
        assert!(refused.contains("not pod"), "{refused}");
        assert!(Subject::parse("fgd/").is_err());
        assert!(Subject::parse("fgd/a/b").is_err());
    }
}
