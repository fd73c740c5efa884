//! Interleaved multi-channel frames to mono: keep one channel or mix all of them down.

/// Which part of a multi-channel signal a source keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelPick {
    /// The mean of all channels.
    Mix,
    /// One channel (0-based).
    Channel(usize),
}

impl ChannelPick {
    /// From the config's optional `channel` key, checked against the number of channels.
    /// The error text says what is wrong (the caller adds the file or key).
    pub fn new(channel: Option<u16>, channels: usize) -> Result<Self, String> {
        match channel {
            None => Ok(ChannelPick::Mix),
            Some(c) if (c as usize) < channels => Ok(ChannelPick::Channel(c as usize)),
            Some(c) => Err(format!(
                "channel {c} does not exist: the input has {channels} channel(s) (0-based)"
            )),
        }
    }

    /// One mono sample from one frame of `frame.len()` channels, converting each sample with `to_f32`.
    #[inline]
    pub fn mono<T: Copy>(self, frame: &[T], to_f32: impl Fn(T) -> f32) -> f32 {
        match self {
            ChannelPick::Channel(c) => to_f32(frame[c]),
            ChannelPick::Mix => {
                if frame.len() == 1 {
                    to_f32(frame[0])
                } else {
                    frame.iter().map(|&s| to_f32(s)).sum::<f32>() / frame.len() as f32
                }
            }
        }
    }
}

/// Signed 16-bit PCM to f32 in [-1, 1).
#[inline]
pub fn s16_to_f32(v: i16) -> f32 {
    v as f32 / 32_768.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_and_pick() {
        let frame = [0.5f32, -0.25, 1.0];
        assert_eq!(ChannelPick::Mix.mono(&frame, |x| x), 1.25 / 3.0);
        assert_eq!(ChannelPick::Channel(1).mono(&frame, |x| x), -0.25);
        assert!(ChannelPick::new(Some(3), 3).is_err());
        assert_eq!(ChannelPick::new(None, 2), Ok(ChannelPick::Mix));
    }
}
