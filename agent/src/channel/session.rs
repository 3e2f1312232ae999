//! The agent's side of the channel as a sans-IO state machine: engine messages and job
//! events in, messages to send and jobs to start out. It outlives connections, so a job
//! keeps running while the agent reconnects, and the result of the last command is sent
//! again on every new connection until the engine moves on to another command — a
//! dropped connection loses nothing.

use super::protocol::{
    AgentMessage, CleanPolicy, Command, DeployJob, EngineMessage, FailureKind, Outcome,
};

/// Work for the caller's job handler.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    Inspect,
    Clean(CleanPolicy),
    Deploy(Box<DeployJob>),
}

/// What the edge must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start `job`; report its end with [`Session::finished`].
    Start { id: u64, job: Job },
    /// Send this to the engine.
    Send(AgentMessage),
    /// The engine released the agent: abandon any job, close, do not reconnect.
    Stop,
}

/// The session state.
#[derive(Debug, Default)]
pub struct Session {
    running: Option<u64>,
    last_result: Option<(u64, Outcome)>,
    released: bool,
}

impl Session {
    pub fn new() -> Self {
        Self::default()
    }

    /// A connection is up: what to send before anything else.
    pub fn connected(&self) -> Vec<AgentMessage> {
        self.last_result
            .iter()
            .map(|(id, outcome)| AgentMessage::Result {
                id: *id,
                outcome: outcome.clone(),
            })
            .collect()
    }

    /// The engine sent `message`.
    pub fn received(&mut self, message: EngineMessage) -> Vec<Action> {
        let EngineMessage::Command { id, command } = message;
        if self.running == Some(id) {
            // Sent again after a reconnect: it is already running.
            return Vec::new();
        }
        if let Some((done, outcome)) = &self.last_result
            && *done == id
        {
            return vec![Action::Send(AgentMessage::Result {
                id,
                outcome: outcome.clone(),
            })];
        }
        let job = match command {
            Command::Release => {
                self.released = true;
                self.running = None;
                self.last_result = Some((id, Outcome::Done));
                return vec![
                    Action::Send(AgentMessage::Result {
                        id,
                        outcome: Outcome::Done,
                    }),
                    Action::Stop,
                ];
            }
            Command::Inspect => Job::Inspect,
            Command::Clean { policy } => Job::Clean(policy),
            Command::Deploy(deploy) => Job::Deploy(deploy),
        };
        if let Some(running) = self.running {
            return vec![Action::Send(AgentMessage::Result {
                id,
                outcome: Outcome::Failed {
                    kind: FailureKind::Busy,
                    message: format!("command {running} is still running"),
                },
            })];
        }
        self.running = Some(id);
        // A new command means the engine has the previous result.
        self.last_result = None;
        vec![Action::Start { id, job }]
    }

    /// Job `id` reports progress; `None` if it is not the running job any more.
    pub fn progress(&self, id: u64, percent: Option<u8>, message: String) -> Option<AgentMessage> {
        (self.running == Some(id)).then(|| AgentMessage::Progress {
            id,
            percent: percent.map(|p| p.min(100)),
            message,
        })
    }

    /// Job `id` ended; the result to send, kept until the engine sends another command.
    pub fn finished(&mut self, id: u64, outcome: Outcome) -> Option<AgentMessage> {
        if self.running != Some(id) {
            return None;
        }
        self.running = None;
        self.last_result = Some((id, outcome.clone()));
        Some(AgentMessage::Result { id, outcome })
    }

    /// The id of the running job.
    pub fn running(&self) -> Option<u64> {
        self.running
    }

    pub fn is_released(&self) -> bool {
        self.released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(id: u64, command: Command) -> EngineMessage {
        EngineMessage::Command { id, command }
    }

    #[test]
    fn one_job_at_a_time_and_results_survive_reconnects() {
        let mut session = Session::new();
        assert!(session.connected().is_empty());
        assert_eq!(
            session.received(command(1, Command::Inspect)),
            vec![Action::Start {
                id: 1,
                job: Job::Inspect
            }]
        );
        // The same command again (the engine re-sent it) does not start a second job.
        assert!(session.received(command(1, Command::Inspect)).is_empty());
        let busy = session.received(command(2, Command::Inspect));
        assert!(matches!(
            &busy[..],
            [Action::Send(AgentMessage::Result {
                id: 2,
                outcome: Outcome::Failed {
                    kind: FailureKind::Busy,
                    ..
                }
            })]
        ));
        assert!(
            session
                .progress(1, Some(250), "half".into())
                .is_some_and(|m| matches!(
                    m,
                    AgentMessage::Progress {
                        percent: Some(100),
                        ..
                    }
                ))
        );
        assert!(session.progress(9, None, "stale".into()).is_none());
        let result = session.finished(1, Outcome::Done).unwrap();
        assert!(session.finished(1, Outcome::Done).is_none());
        // Every new connection repeats the last result until another command arrives.
        assert_eq!(session.connected(), vec![result.clone()]);
        assert_eq!(
            session.received(command(1, Command::Inspect)),
            vec![Action::Send(result)]
        );
        let clean = command(
            3,
            Command::Clean {
                policy: CleanPolicy::default(),
            },
        );
        assert!(matches!(
            &session.received(clean)[..],
            [Action::Start { id: 3, .. }]
        ));
        assert!(session.connected().is_empty());
    }

    #[test]
    fn release_answers_then_stops_even_mid_job() {
        let mut session = Session::new();
        session.received(command(1, Command::Inspect));
        let actions = session.received(command(2, Command::Release));
        assert_eq!(
            actions,
            vec![
                Action::Send(AgentMessage::Result {
                    id: 2,
                    outcome: Outcome::Done
                }),
                Action::Stop
            ]
        );
        assert!(session.is_released());
        assert_eq!(session.running(), None);
        assert!(session.finished(1, Outcome::Done).is_none());
    }
}
