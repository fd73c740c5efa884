//! The assistant's conversation interface: a [`Responder`] answers one user turn at a time and streams its reply
//! as [`ResponseChunk`]s; the caller may stop it early (barge-in).

use crate::Result;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One piece of a reply, in the order the model produced it.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseChunk {
    /// A text token: its id in the model's vocabulary and its decoded text piece.
    Text { id: u32, piece: String },
    /// Reply audio at [`Responder::output_rate`] (24 kHz for LFM2-Audio), mono.
    Audio(Vec<f32>),
}

/// A conversational speech model that answers user turns.
pub trait Responder: Send {
    /// Answer one user turn (16 kHz mono). Call `emit` for each chunk as it is produced; stop early when it
    /// returns `ControlFlow::Break(())` (barge-in). Keeps conversation state across calls.
    fn respond(
        &mut self,
        turn: &[f32],
        emit: &mut dyn FnMut(ResponseChunk) -> ControlFlow<()>,
    ) -> Result<()>;
    /// Forget the conversation, as if newly built.
    fn reset(&mut self);
    /// Sample rate of the audio in [`ResponseChunk::Audio`].
    fn output_rate(&self) -> u32 {
        24_000
    }
}

/// The system prompt the assistant uses when the config gives none (the one LFM2-Audio's demo chat uses for
/// interleaved replies).
pub const DEFAULT_SYSTEM_PROMPT: &str = "Respond with interleaved text and audio.";

/// Cuts the stream into user turns from voice-activity and wake-word events, keeping the audio they need.
///
/// Positions are sample indices of the stream at the turn rate (16 kHz). While nobody speaks, only the last
/// `keep` samples are held (the VAD reports a segment's start up to its padding late); during speech, at most
/// `max_turn + keep` samples (a longer turn keeps its end).
#[derive(Debug, Clone)]
pub struct TurnDetector {
    history: Vec<f32>,
    /// Stream position of `history[0]`.
    history_start: u64,
    speech_start: Option<u64>,
    keep: u64,
    max_turn: u64,
    wake: Option<WakeWord>,
    last_wake: Option<u64>,
}

/// A required wake word: the `label` of a keyword spotter's `detection` events, heard at most `window` samples
/// before its turn began (or during it).
#[derive(Debug, Clone, PartialEq)]
pub struct WakeWord {
    pub label: String,
    pub window: u64,
}

impl TurnDetector {
    pub fn new(keep: u64, max_turn: u64, wake: Option<WakeWord>) -> Self {
        TurnDetector {
            history: Vec::new(),
            history_start: 0,
            speech_start: None,
            keep,
            max_turn: max_turn.max(1),
            wake,
            last_wake: None,
        }
    }

    /// Stream position after the audio pushed so far.
    pub fn position(&self) -> u64 {
        self.history_start + self.history.len() as u64
    }

    /// Whether a user is speaking (between `speech_start` and `speech_end`).
    pub fn in_speech(&self) -> bool {
        self.speech_start.is_some()
    }

    /// The next samples of the stream.
    pub fn push_audio(&mut self, samples: &[f32]) {
        self.history.extend_from_slice(samples);
        let limit = match self.speech_start {
            None => self.keep,
            Some(_) => self.max_turn + self.keep,
        };
        let excess = self.history.len().saturating_sub(limit as usize);
        // Trim in large steps so the copy is amortised.
        if excess > 0 && excess >= self.history.len() / 2 {
            self.history.drain(..excess);
            self.history_start += excess as u64;
        }
    }

    /// The VAD saw speech begin at `sample`.
    pub fn speech_started(&mut self, sample: u64) {
        self.speech_start = Some(sample);
    }

    /// The keyword spotter detected `label` at `sample`.
    pub fn detected(&mut self, label: &str, sample: u64) {
        if self.wake.as_ref().is_some_and(|w| w.label == label) {
            self.last_wake = Some(sample);
        }
    }

    /// The VAD saw the speech that began earlier end at `sample`: the turn's audio if the turn is for the
    /// assistant (always without a wake word; with one, when it was heard in time).
    pub fn speech_ended(&mut self, sample: u64) -> Option<Vec<f32>> {
        let start = self.speech_start.take()?;
        if let Some(w) = &self.wake {
            let heard = self
                .last_wake
                .is_some_and(|t| t + w.window >= start && t <= sample);
            if !heard {
                return None;
            }
            self.last_wake = None;
        }
        let start = start.max(sample.saturating_sub(self.max_turn));
        let from = start.saturating_sub(self.history_start) as usize;
        let to = (sample.saturating_sub(self.history_start) as usize).min(self.history.len());
        (from < to).then(|| self.history[from..to].to_vec())
    }

    /// Forget everything, as if newly built.
    pub fn reset(&mut self) {
        *self = TurnDetector::new(self.keep, self.max_turn, self.wake.clone());
    }
}

/// A user turn handed to the model thread.
#[derive(Debug, Clone)]
pub struct Turn {
    pub id: u64,
    /// 16 kHz mono.
    pub audio: Vec<f32>,
}

/// What the model thread reports about a turn.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyMessage {
    /// The next chunk of the reply to `turn`.
    Chunk { turn: u64, chunk: ResponseChunk },
    /// The reply to `turn` is complete (or was stopped); `error` if the model failed.
    Done { turn: u64, error: Option<String> },
}

enum Request {
    Turn(Turn),
    Reset,
}

/// A [`Responder`] on a thread of its own behind bounded channels, so that whoever feeds it never waits for it:
/// turns go in with [`ResponderThread::submit`] (refused while one is queued), reply chunks come out in order
/// with [`ResponderThread::try_next`] / [`ResponderThread::next`], and [`ResponderThread::cancel`] stops a reply
/// at its next chunk.
pub struct ResponderThread {
    requests: Option<crossbeam_channel::Sender<Request>>,
    replies: crossbeam_channel::Receiver<ReplyMessage>,
    /// Every turn with an id below this is cancelled.
    cancel_below: Arc<AtomicU64>,
    output_rate: u32,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ResponderThread {
    /// Start the thread; up to `queue` reply chunks wait for the reader before the model waits in turn.
    pub fn spawn(mut responder: Box<dyn Responder>, queue: usize) -> Result<Self> {
        let (req_tx, req_rx) = crossbeam_channel::bounded::<Request>(1);
        let (rep_tx, rep_rx) = crossbeam_channel::bounded::<ReplyMessage>(queue.max(1));
        let cancel_below = Arc::new(AtomicU64::new(0));
        let output_rate = responder.output_rate();
        let cancel = Arc::clone(&cancel_below);
        let thread = std::thread::Builder::new()
            .name("s2s model".into())
            .spawn(move || {
                for req in req_rx.iter() {
                    let turn = match req {
                        Request::Reset => {
                            responder.reset();
                            continue;
                        }
                        Request::Turn(t) => t,
                    };
                    let id = turn.id;
                    let stopped = || cancel.load(Ordering::Acquire) > id;
                    let mut gone = false;
                    let result = if stopped() {
                        Ok(())
                    } else {
                        responder.respond(&turn.audio, &mut |chunk| {
                            if stopped() {
                                return ControlFlow::Break(());
                            }
                            if rep_tx
                                .send(ReplyMessage::Chunk { turn: id, chunk })
                                .is_err()
                            {
                                gone = true;
                                return ControlFlow::Break(());
                            }
                            if stopped() {
                                ControlFlow::Break(())
                            } else {
                                ControlFlow::Continue(())
                            }
                        })
                    };
                    let error = result.err().map(|e| e.to_string());
                    if gone || rep_tx.send(ReplyMessage::Done { turn: id, error }).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| crate::Error::io("starting the s2s model thread", e))?;
        Ok(ResponderThread {
            requests: Some(req_tx),
            replies: rep_rx,
            cancel_below,
            output_rate,
            thread: Some(thread),
        })
    }

    /// Rate of the reply audio.
    pub fn output_rate(&self) -> u32 {
        self.output_rate
    }

    /// Hand a turn to the model without waiting; gives it back if the model still has one queued.
    pub fn submit(&self, turn: Turn) -> std::result::Result<(), Turn> {
        let Some(tx) = &self.requests else {
            return Err(turn);
        };
        tx.try_send(Request::Turn(turn))
            .map_err(|e| match e.into_inner() {
                Request::Turn(t) => t,
                Request::Reset => unreachable!("only turns are sent here"),
            })
    }

    /// Ask the model to forget the conversation before its next turn (dropped if a turn is queued).
    pub fn reset(&self) {
        if let Some(tx) = &self.requests {
            let _ = tx.try_send(Request::Reset);
        }
    }

    /// Stop the reply to `turn` (and any earlier one) at its next chunk.
    pub fn cancel(&self, turn: u64) {
        self.cancel_below.fetch_max(turn + 1, Ordering::AcqRel);
    }

    /// The next message if one is there.
    pub fn try_next(&self) -> Option<ReplyMessage> {
        self.replies.try_recv().ok()
    }

    /// The next message, waiting for it; `None` if the model thread has ended.
    pub fn next(&self) -> Option<ReplyMessage> {
        self.replies.recv().ok()
    }
}

impl Drop for ResponderThread {
    fn drop(&mut self) {
        self.cancel_below.store(u64::MAX, Ordering::Release);
        self.requests = None;
        // Unblock a model waiting for room in the reply queue, then let it see the cancellation.
        while self.replies.try_recv().is_ok() {}
        if let Some(t) = self.thread.take() {
            while !t.is_finished() {
                while self.replies.try_recv().is_ok() {}
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let _ = t.join();
        }
    }
}
