//! Length-hiding padding of the inner message: ISO/IEC 7816-4 (one `0x80`
//! byte, then zeros), exactly libsodium's `sodium_pad`, to a small set of
//! bucket sizes so that the ciphertext length reveals only the bucket.
//!
//! Buckets: 256, 512, 1024, … up to 65536 bytes (powers of two), then every
//! multiple of 65536. A message of `n` bytes goes to the smallest bucket of at
//! least `n + 1` bytes, which is `sodium_pad(inner, block_size(n))`.

use zeroize::Zeroizing;

use super::{EnvelopeError, MAX_PADDED_LEN};

/// The smallest bucket.
pub(crate) const MIN_BUCKET: usize = 256;
/// Above this size buckets grow linearly instead of doubling.
pub(crate) const LINEAR_STEP: usize = 65536;

/// The `sodium_pad` block size that pads `unpadded_len` bytes to its bucket.
pub(crate) fn block_size(unpadded_len: usize) -> usize {
    // sodium_pad always adds at least the 0x80 byte.
    let needed = unpadded_len.saturating_add(1);
    if needed > LINEAR_STEP {
        LINEAR_STEP
    } else {
        needed.next_power_of_two().max(MIN_BUCKET)
    }
}

/// Whether `len` is a bucket size a receiver accepts.
pub(crate) fn is_bucket(len: usize) -> bool {
    let doubling = (MIN_BUCKET..=LINEAR_STEP).contains(&len) && len.is_power_of_two();
    let linear = len > LINEAR_STEP && len.is_multiple_of(LINEAR_STEP);
    (doubling || linear) && len <= MAX_PADDED_LEN
}

/// Pads `data` to its bucket; the caller bounds `data.len()`.
pub(crate) fn pad(data: &[u8]) -> Zeroizing<Vec<u8>> {
    let block = block_size(data.len());
    let padded_len = (data.len() / block + 1) * block;
    let mut out = Zeroizing::new(Vec::with_capacity(padded_len));
    out.extend_from_slice(data);
    out.push(0x80);
    out.resize(padded_len, 0);
    out
}

/// Strips the padding, as `sodium_unpad` with the block size of the bucket.
///
/// The input was authenticated by the secretbox before it gets here, so the
/// scan need not be constant-time.
pub(crate) fn unpad(padded: &[u8]) -> Result<&[u8], EnvelopeError> {
    if !is_bucket(padded.len()) {
        return Err(EnvelopeError::Padding);
    }
    // sodium_unpad only looks for the marker within the last block.
    let block = padded.len().min(LINEAR_STEP);
    let floor = padded.len() - block;
    let mut end = padded.len();
    while end > floor {
        end -= 1;
        match padded[end] {
            0x00 => continue,
            0x80 => return Ok(&padded[..end]),
            _ => return Err(EnvelopeError::Padding),
        }
    }
    Err(EnvelopeError::Padding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_go_to_the_smallest_bucket_that_fits() {
        for (len, padded) in [
            (0, 256),
            (255, 256),
            (256, 512),
            (65535, 65536),
            (65536, 131072),
            (131071, 131072),
            (131072, 196608),
        ] {
            let out = pad(&vec![7u8; len]);
            assert_eq!(out.len(), padded, "length {len}");
            assert!(is_bucket(out.len()));
            assert_eq!(unpad(&out).unwrap(), vec![7u8; len].as_slice());
        }
    }

    #[test]
    fn malformed_padding_is_refused() {
        let mut good = pad(b"hello").to_vec();
        assert_eq!(unpad(&good).unwrap(), b"hello");
        // Not a bucket size.
        assert!(unpad(&good[..255]).is_err());
        assert!(unpad(&[]).is_err());
        // No marker, or garbage after it.
        assert!(unpad(&[0u8; 256]).is_err());
        good[255] = 1;
        assert!(unpad(&good).is_err());
        // A marker further back than one block is not padding.
        let mut far = vec![0u8; 2 * LINEAR_STEP];
        far[LINEAR_STEP - 1] = 0x80;
        assert!(unpad(&far).is_err());
        far[LINEAR_STEP] = 0x80;
        assert_eq!(unpad(&far).unwrap().len(), LINEAR_STEP);
        // Larger than any bucket a receiver accepts.
        assert!(!is_bucket(MAX_PADDED_LEN + LINEAR_STEP));
    }
}
