"""Named limits of the wire codec. Every count a peer controls is bounded here."""

# Largest IKE message accepted or built: UDP payloads and RFC 8229 TCP frames both top out at 64 KiB.
MAX_MESSAGE_SIZE = 65535
# Payloads in one chain (the outer message or a decrypted SK body); a large IKE_AUTH with a
# certificate chain and many notifies stays far below this.
MAX_PAYLOADS = 128
# Proposals per SA payload; the proposal number is one octet and strongSwan's defaults send < 10.
MAX_PROPOSALS = 64
# Transforms per proposal: the "Num Transforms" field is one octet.
MAX_TRANSFORMS = 255
# Attributes per transform: only Key Length is defined (RFC 7296 section 3.3.5).
MAX_TRANSFORM_ATTRIBUTES = 16
# Traffic selectors per TS payload: the "Number of TSs" field is one octet.
MAX_TRAFFIC_SELECTORS = 255
# SPIs per Delete payload (a 64 KiB message holds at most ~16k four-octet SPIs).
MAX_DELETE_SPIS = 4096
# Attributes per Configuration payload.
MAX_CONFIG_ATTRIBUTES = 256
# Nonce data size bounds, RFC 7296 section 3.9 ("MUST be between 16 and 256 octets").
MIN_NONCE_SIZE = 16
MAX_NONCE_SIZE = 256
# Largest payload body: the generic header's length field is 16 bits and counts its own 4 octets.
MAX_PAYLOAD_BODY = 65535 - 4
# Distinct decoded transforms interned by the SA parser (each entry < 200 bytes), in two generations of
# half this each, so a flood of distinct transforms evicts rather than fills it (wire/sa.py).
MAX_TRANSFORM_CACHE = 4096
