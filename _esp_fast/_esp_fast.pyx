# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Python face of the C ESP core (esp_core.c): takes buffers, releases the GIL around real work.

The public, documented API is `ikev2lib.esp`; this module holds only the thin bindings it uses.

Lock rule: no call here waits for an SA's mutex while holding the GIL. Otherwise one thread running a
long batch on an SA (mutex held, GIL released) would stall every Python thread as soon as another thread
touched the same SA. Calls that keep the GIL (small packets, counters) use the core's `_try` entry points,
which never wait, and fall back to the blocking entry point inside `with nogil` when the SA is busy; all
other calls that take the mutex run entirely inside `with nogil`. No Python object is touched there: only
C pointers into buffers whose exports (or bytes objects) the call holds.
"""

import ipaddress

from cpython.ref cimport PyObject, Py_DECREF
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.errno cimport errno
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer


cdef object _raise_impl = None


def _raise_for_status(status, detail=""):
    # Imported on first use, not at module init: importing ikev2lib.esp.errors runs ikev2lib/esp/__init__,
    # which imports this module to choose the back end; at init time that cycle made a direct
    # `import ikev2lib._esp_fast` silently select the pure-Python back end.
    global _raise_impl
    if _raise_impl is None:
        from ikev2lib.esp.errors import raise_for_status
        _raise_impl = raise_for_status
    _raise_impl(status, detail)

# Single-packet calls release the GIL only for packets this large (or when the SA is busy): below it,
# dropping and retaking the GIL costs more than the crypto it would let run in parallel. Batch calls
# always release it.
cdef enum:
    GIL_RELEASE_MIN = 256


cdef extern from "Python.h":
    PyObject *PyBytes_FromStringAndSize_raw "PyBytes_FromStringAndSize" (const char *, Py_ssize_t)
    int _PyBytes_Resize(PyObject **, Py_ssize_t) except -1
    char *PyBytes_AS_STRING_raw "PyBytes_AS_STRING" (PyObject *)


cdef extern from *:
    uint64_t __atomic_load_n(uint64_t *, int) nogil
    int __ATOMIC_RELAXED


cdef extern from "esp_sock.h" nogil:
    int esp_sock_send_batch(int fd, const uint8_t *buf, size_t buf_size, const uint32_t *offs,
                            const uint32_t *lens, size_t n, size_t skip, size_t *sent, int *err)
    int esp_sock_recv_batch(int fd, uint8_t *buf, size_t buf_size, size_t slot, size_t headroom, size_t n,
                            int strip_ipv4, int synth_udp, uint32_t *offs, uint32_t *lens, size_t *received,
                            int *err)


cdef extern from "esp_core.h" nogil:
    # Names only: the values come from the header when this module is compiled. _constants() hands them
    # to Python, where tests/esp/test_constants.py checks them against the header and every Python copy.
    enum:
        ESP_SPI_LEN
        ESP_SEQ_LEN
        ESP_HDR_LEN
        ESP_IV_LEN
        ESP_SALT_LEN
        ESP_UDP_HDR_LEN
        ESP_MAX_PAD
        ESP_MAX_PACKET
        ESP_MAX_TFC_PAD
        ESP_MAX_REPLAY_WINDOW
        ESP_DEFAULT_REPLAY_WINDOW
        ESP_NH_IPV4
        ESP_NH_IPV6
        ESP_NH_NONE
        ESP_CBC_IV_LEN
        ESP_CBC_BLOCK
        ESP_BUSY
        ESP_ALG_AES_GCM
        ESP_ALG_CHACHA20_POLY1305
        ESP_ALG_AES_CBC_HMAC_SHA1
        ESP_ALG_AES_CBC_HMAC_SHA256
        ESP_ALG_AES_CBC_HMAC_SHA384
        ESP_ALG_AES_CBC_HMAC_SHA512
        ESP_OK
        ESP_ERR_AUTH
        ESP_ERR_REPLAY
        ESP_ERR_WINDOW
        ESP_ERR_MALFORMED
        ESP_ERR_PADDING
        ESP_ERR_UNKNOWN_SPI
        ESP_ERR_NOT_ESP
        ESP_ERR_DUMMY
        ESP_ERR_HARD_EXPIRED
        ESP_ERR_SEQ_OVERFLOW
        ESP_ERR_BUFFER
        ESP_ERR_INVALID
        ESP_ERR_CRYPTO
        ESP_STATUS_COUNT
        ESP_LIFETIME_OK
        ESP_LIFETIME_SOFT
        ESP_LIFETIME_HARD
        ESP_UDP_KEEPALIVE
        ESP_UDP_IKE
        ESP_UDP_ESP
        ESP_UDP_INVALID
    ctypedef struct esp_sa_t:
        pass
    ctypedef struct esp_sa_config_t:
        uint32_t spi
        int alg
        const uint8_t *key
        size_t key_len
        const uint8_t *salt
        unsigned icv_len
        int outbound
        int tunnel
        int esn
        uint32_t replay_window
        int udp_encap
        uint16_t udp_sport
        uint16_t udp_dport
        uint64_t soft_packets
        uint64_t hard_packets
        uint64_t soft_bytes
        uint64_t hard_bytes
        const uint8_t *integ_key
        size_t integ_key_len
    ctypedef struct esp_stats_t:
        uint64_t packets
        uint64_t bytes
        uint64_t drops[ESP_STATUS_COUNT]
    ctypedef struct esp_replay_t:
        uint64_t last
        uint32_t window
    ctypedef struct esp_table_entry_t:
        uint32_t spi
        esp_sa_t *sa


    const char *esp_core_openssl_version()
    esp_sa_t *esp_sa_new(const esp_sa_config_t *cfg, int *status)
    void esp_sa_free(esp_sa_t *sa)
    size_t esp_encap_size(const esp_sa_t *sa, size_t inner_len, size_t tfc_pad)
    int esp_encap(esp_sa_t *sa, int next_header, const uint8_t *inp, size_t in_len, size_t tfc_pad,
                  uint8_t *out, size_t out_cap, size_t *out_len)
    int esp_decap(esp_sa_t *sa, const uint8_t *pkt, size_t pkt_len, uint8_t *out, size_t out_cap,
                  size_t *out_len, int *next_header)
    int esp_encap_try(esp_sa_t *sa, int next_header, const uint8_t *inp, size_t in_len, size_t tfc_pad,
                      uint8_t *out, size_t out_cap, size_t *out_len)
    int esp_decap_try(esp_sa_t *sa, const uint8_t *pkt, size_t pkt_len, uint8_t *out, size_t out_cap,
                      size_t *out_len, int *next_header)
    size_t esp_encap_batch(esp_sa_t *sa, int next_header, const uint8_t *inp, size_t in_size,
                           const uint32_t *offs, const uint32_t *lens, size_t n, uint8_t *out, size_t out_cap,
                           uint32_t *out_offs, uint32_t *out_lens, uint8_t *status)
    size_t esp_decap_batch(const esp_table_entry_t *table, size_t n_sa, int udp_encap, const uint8_t *inp,
                           size_t in_size, const uint32_t *offs, const uint32_t *lens, size_t n, uint8_t *out,
                           size_t out_cap, uint32_t *out_offs, uint32_t *out_lens, uint8_t *next_headers,
                           uint8_t *status, uint64_t *table_drops)
    void esp_table_sort(esp_table_entry_t *table, size_t n_sa)
    int esp_table_check_unique(const esp_table_entry_t *table, size_t n_sa)
    int esp_udp_classify(const uint8_t *payload, size_t length)
    void esp_sa_stats(esp_sa_t *sa, esp_stats_t *out)
    int esp_sa_lifetime_state(esp_sa_t *sa)
    int esp_sa_stats_try(esp_sa_t *sa, esp_stats_t *out)
    int esp_sa_lifetime_state_try(esp_sa_t *sa)
    uint64_t esp_sa_next_seq(esp_sa_t *sa)
    uint64_t esp_sa_highest_seq(esp_sa_t *sa)
    int esp_sa_advance(esp_sa_t *sa, uint64_t next_seq)
    int esp_sa_set_ceiling(esp_sa_t *sa, uint64_t last_allowed)
    int esp_replay_init(esp_replay_t *w, uint32_t window)
    void esp_replay_free(esp_replay_t *w)
    void esp_replay_reset(esp_replay_t *w, uint64_t last)
    int esp_replay_check(const esp_replay_t *w, uint64_t seq)
    void esp_replay_update(esp_replay_t *w, uint64_t seq)
    int esp_infer_seq(uint64_t last, uint32_t window, uint32_t seq_lo, uint64_t *seq)


def openssl_version() -> str:
    """The libcrypto version the extension is linked against."""
    return esp_core_openssl_version().decode()


def _constants():
    """Every constant of esp_core.h by its C name, with the value this module was compiled with."""
    return {
        "ESP_SPI_LEN": ESP_SPI_LEN, "ESP_SEQ_LEN": ESP_SEQ_LEN, "ESP_HDR_LEN": ESP_HDR_LEN,
        "ESP_IV_LEN": ESP_IV_LEN, "ESP_SALT_LEN": ESP_SALT_LEN, "ESP_UDP_HDR_LEN": ESP_UDP_HDR_LEN,
        "ESP_MAX_PAD": ESP_MAX_PAD, "ESP_MAX_PACKET": ESP_MAX_PACKET, "ESP_MAX_TFC_PAD": ESP_MAX_TFC_PAD,
        "ESP_MAX_REPLAY_WINDOW": ESP_MAX_REPLAY_WINDOW, "ESP_DEFAULT_REPLAY_WINDOW": ESP_DEFAULT_REPLAY_WINDOW,
        "ESP_NH_IPV4": ESP_NH_IPV4, "ESP_NH_IPV6": ESP_NH_IPV6, "ESP_NH_NONE": ESP_NH_NONE,
        "ESP_CBC_IV_LEN": ESP_CBC_IV_LEN, "ESP_CBC_BLOCK": ESP_CBC_BLOCK, "ESP_BUSY": ESP_BUSY,
        "ESP_ALG_AES_GCM": ESP_ALG_AES_GCM, "ESP_ALG_CHACHA20_POLY1305": ESP_ALG_CHACHA20_POLY1305,
        "ESP_ALG_AES_CBC_HMAC_SHA1": ESP_ALG_AES_CBC_HMAC_SHA1,
        "ESP_ALG_AES_CBC_HMAC_SHA256": ESP_ALG_AES_CBC_HMAC_SHA256,
        "ESP_ALG_AES_CBC_HMAC_SHA384": ESP_ALG_AES_CBC_HMAC_SHA384,
        "ESP_ALG_AES_CBC_HMAC_SHA512": ESP_ALG_AES_CBC_HMAC_SHA512,
        "ESP_OK": ESP_OK, "ESP_ERR_AUTH": ESP_ERR_AUTH, "ESP_ERR_REPLAY": ESP_ERR_REPLAY,
        "ESP_ERR_WINDOW": ESP_ERR_WINDOW, "ESP_ERR_MALFORMED": ESP_ERR_MALFORMED,
        "ESP_ERR_PADDING": ESP_ERR_PADDING, "ESP_ERR_UNKNOWN_SPI": ESP_ERR_UNKNOWN_SPI,
        "ESP_ERR_NOT_ESP": ESP_ERR_NOT_ESP, "ESP_ERR_DUMMY": ESP_ERR_DUMMY,
        "ESP_ERR_HARD_EXPIRED": ESP_ERR_HARD_EXPIRED, "ESP_ERR_SEQ_OVERFLOW": ESP_ERR_SEQ_OVERFLOW,
        "ESP_ERR_BUFFER": ESP_ERR_BUFFER, "ESP_ERR_INVALID": ESP_ERR_INVALID, "ESP_ERR_CRYPTO": ESP_ERR_CRYPTO,
        "ESP_STATUS_COUNT": ESP_STATUS_COUNT,
        "ESP_LIFETIME_OK": ESP_LIFETIME_OK, "ESP_LIFETIME_SOFT": ESP_LIFETIME_SOFT,
        "ESP_LIFETIME_HARD": ESP_LIFETIME_HARD,
        "ESP_UDP_KEEPALIVE": ESP_UDP_KEEPALIVE, "ESP_UDP_IKE": ESP_UDP_IKE, "ESP_UDP_ESP": ESP_UDP_ESP,
        "ESP_UDP_INVALID": ESP_UDP_INVALID,
    }


def udp_classify(const unsigned char[::1] payload not None) -> int:
    """Kind of a UDP/4500 datagram payload: 0 keepalive, 1 IKE, 2 ESP, 3 invalid."""
    return esp_udp_classify(&payload[0] if payload.shape[0] else NULL, <size_t>payload.shape[0])


cdef inline const uint8_t *_ptr(const unsigned char[::1] v) noexcept:
    return &v[0] if v.shape[0] else <const uint8_t *>""


cdef class CoreSA:
    """One unidirectional ESP SA held by the C core. Use `ikev2lib.esp.EspSA`, which validates the
    configuration and subclasses this."""

    cdef esp_sa_t *sa
    cdef bint outbound
    cdef bint tunnel
    cdef bint udp_encap
    cdef unsigned icv_len

    def __cinit__(self, *args, **kwargs):
        self.sa = NULL

    def __dealloc__(self):
        if self.sa is not NULL:
            esp_sa_free(self.sa)
            self.sa = NULL

    cdef inline int _check_ready(self) except -1:
        if self.sa is NULL:
            _raise_for_status(ESP_ERR_INVALID, "SA not configured")
        return 0

    def _configure(self, uint32_t spi, int alg, const unsigned char[::1] key not None,
                   const unsigned char[::1] salt not None, unsigned icv_len, bint outbound, bint tunnel,
                   bint esn, uint32_t replay_window, bint udp_encap, uint16_t udp_sport, uint16_t udp_dport,
                   uint64_t soft_packets, uint64_t hard_packets, uint64_t soft_bytes, uint64_t hard_bytes,
                   const unsigned char[::1] integ_key=None):
        # AEAD: salt is the 4-byte KEYMAT salt, integ_key None. AES-CBC: salt empty, integ_key the HMAC key.
        cdef esp_sa_config_t cfg
        cdef int status = 0
        if self.sa is not NULL:
            _raise_for_status(ESP_ERR_INVALID, "SA already configured")
        if key.shape[0] == 0 or (integ_key is None and salt.shape[0] != 4):
            _raise_for_status(ESP_ERR_INVALID, "bad key material")
        if integ_key is not None and (integ_key.shape[0] == 0 or salt.shape[0] != 0):
            _raise_for_status(ESP_ERR_INVALID, "bad key material")
        memset(&cfg, 0, sizeof(cfg))
        cfg.spi = spi
        cfg.alg = alg
        cfg.key = &key[0]
        cfg.key_len = <size_t>key.shape[0]
        cfg.salt = &salt[0] if salt.shape[0] else NULL
        if integ_key is not None:
            cfg.integ_key = &integ_key[0]
            cfg.integ_key_len = <size_t>integ_key.shape[0]
        cfg.icv_len = icv_len
        cfg.outbound = outbound
        cfg.tunnel = tunnel
        cfg.esn = esn
        cfg.replay_window = replay_window
        cfg.udp_encap = udp_encap
        cfg.udp_sport = udp_sport
        cfg.udp_dport = udp_dport
        cfg.soft_packets = soft_packets
        cfg.hard_packets = hard_packets
        cfg.soft_bytes = soft_bytes
        cfg.hard_bytes = hard_bytes
        self.sa = esp_sa_new(&cfg, &status)
        if self.sa is NULL:
            _raise_for_status(status, "cannot create SA")
        self.outbound = outbound
        self.tunnel = tunnel
        self.udp_encap = udp_encap
        self.icv_len = icv_len

    cdef inline int _next_header(self, object next_header) except -2:
        if self.sa is NULL:
            _raise_for_status(ESP_ERR_INVALID, "SA not configured")
        if self.tunnel:
            if next_header is not None:
                _raise_for_status(ESP_ERR_INVALID, "tunnel mode takes the next header from the inner packet")
            return -1
        if next_header is None:
            _raise_for_status(ESP_ERR_INVALID, "transport mode needs next_header")
        if not 0 <= next_header <= 255:
            _raise_for_status(ESP_ERR_INVALID, "next_header must be 0..255")
        return next_header

    def encap_size(self, Py_ssize_t inner_len, Py_ssize_t tfc_padding=0) -> int:
        """Length of the packet `encap` produces for an inner packet of `inner_len` bytes."""
        self._check_ready()
        if inner_len < 0 or tfc_padding < 0:
            _raise_for_status(ESP_ERR_INVALID, "negative length")
        cdef size_t n = esp_encap_size(self.sa, <size_t>inner_len, <size_t>tfc_padding)
        if n == 0:
            _raise_for_status(ESP_ERR_INVALID, "packet too large")
        return n

    def encap(self, inner not None, *, next_header=None, Py_ssize_t tfc_padding=0):
        """Protect one packet and return the ESP packet (with the UDP header if the SA has udp_encap)."""
        cdef int nh = self._next_header(next_header)
        cdef size_t n, cap, out_len = 0
        cdef size_t tfc = <size_t>tfc_padding if tfc_padding > 0 else 0
        cdef int st
        cdef const uint8_t *src
        cdef uint8_t *dst
        cdef PyObject *res
        cdef Py_buffer view
        if tfc_padding < 0:
            _raise_for_status(ESP_ERR_INVALID, "negative TFC padding")
        PyObject_GetBuffer(inner, &view, PyBUF_SIMPLE)  # no Cython memoryview: this is the per-packet path
        try:
            n = <size_t>view.len
            src = <const uint8_t *>view.buf
            cap = esp_encap_size(self.sa, n, tfc)
            if cap == 0:  # too large: let the core report (and count) the first failing check
                with nogil:
                    st = esp_encap(self.sa, nh, src, n, tfc, NULL, 0, &out_len)
                _raise_for_status(st)
            res = PyBytes_FromStringAndSize_raw(NULL, <Py_ssize_t>cap)
            if res is NULL:
                raise MemoryError()
            dst = <uint8_t *>PyBytes_AS_STRING_raw(res)
            st = ESP_BUSY if n >= GIL_RELEASE_MIN else esp_encap_try(self.sa, nh, src, n, tfc, dst, cap, &out_len)
            if st == ESP_BUSY:  # large packet, or another thread holds the SA: wait without the GIL
                with nogil:
                    st = esp_encap(self.sa, nh, src, n, tfc, dst, cap, &out_len)
        finally:
            PyBuffer_Release(&view)
        obj = <object>res
        Py_DECREF(obj)
        if st != ESP_OK:
            _raise_for_status(st)
        return obj

    def encap_into(self, inner not None, out not None, *, next_header=None, Py_ssize_t tfc_padding=0) -> int:
        """Protect one packet into `out` (a writable buffer); returns the packet length."""
        cdef int nh = self._next_header(next_header)
        cdef size_t out_len = 0
        cdef size_t tfc = <size_t>tfc_padding if tfc_padding > 0 else 0
        cdef int st
        cdef Py_buffer src, dst
        if tfc_padding < 0:
            _raise_for_status(ESP_ERR_INVALID, "negative TFC padding")
        PyObject_GetBuffer(inner, &src, PyBUF_SIMPLE)
        try:
            PyObject_GetBuffer(out, &dst, PyBUF_WRITABLE)
            try:
                if dst.len == 0:
                    _raise_for_status(ESP_ERR_BUFFER)
                with nogil:
                    st = esp_encap(self.sa, nh, <const uint8_t *>src.buf, <size_t>src.len, tfc,
                                   <uint8_t *>dst.buf, <size_t>dst.len, &out_len)
            finally:
                PyBuffer_Release(&dst)
        finally:
            PyBuffer_Release(&src)
        if st != ESP_OK:
            _raise_for_status(st)
        return out_len

    def decap(self, packet not None):
        """Verify and decrypt one packet; returns (next_header, inner). Raises an EspError subclass."""
        self._check_ready()
        cdef size_t n, cap, out_len = 0
        cdef int nh = 0, st
        cdef const uint8_t *src
        cdef uint8_t *dst
        cdef PyObject *res
        cdef Py_buffer view
        PyObject_GetBuffer(packet, &view, PyBUF_SIMPLE)
        try:
            n = <size_t>view.len
            src = <const uint8_t *>view.buf
            cap = n if n else 1
            res = PyBytes_FromStringAndSize_raw(NULL, <Py_ssize_t>cap)
            if res is NULL:
                raise MemoryError()
            dst = <uint8_t *>PyBytes_AS_STRING_raw(res)
            st = ESP_BUSY if n >= GIL_RELEASE_MIN else esp_decap_try(self.sa, src, n, dst, cap, &out_len, &nh)
            if st == ESP_BUSY:  # large packet, or another thread holds the SA: wait without the GIL
                with nogil:
                    st = esp_decap(self.sa, src, n, dst, cap, &out_len, &nh)
        finally:
            PyBuffer_Release(&view)
        if st != ESP_OK:
            Py_DECREF(<object>res)
            _raise_for_status(st)
        _PyBytes_Resize(&res, <Py_ssize_t>out_len)
        obj = <object>res
        Py_DECREF(obj)
        return nh, obj

    def decap_into(self, packet not None, out not None):
        """Verify and decrypt one packet into `out`; returns (next_header, length). On any failure
        nothing is left in `out` (decrypted bytes are wiped before the error is raised)."""
        self._check_ready()
        cdef size_t out_len = 0
        cdef int nh = 0, st
        cdef Py_buffer src, dst
        PyObject_GetBuffer(packet, &src, PyBUF_SIMPLE)
        try:
            PyObject_GetBuffer(out, &dst, PyBUF_WRITABLE)
            try:
                if dst.len == 0:
                    _raise_for_status(ESP_ERR_BUFFER)
                with nogil:
                    st = esp_decap(self.sa, <const uint8_t *>src.buf, <size_t>src.len, <uint8_t *>dst.buf,
                                   <size_t>dst.len, &out_len, &nh)
            finally:
                PyBuffer_Release(&dst)
        finally:
            PyBuffer_Release(&src)
        if st != ESP_OK:
            _raise_for_status(st)
        return nh, out_len

    def encap_batch(self, const unsigned char[::1] buf not None, const uint32_t[::1] offsets not None,
                    const uint32_t[::1] lengths not None, unsigned char[::1] out not None,
                    uint32_t[::1] out_offsets not None, uint32_t[::1] out_lengths not None,
                    unsigned char[::1] statuses not None, *, next_header=None) -> int:
        """Protect packets buf[offsets[i]:offsets[i]+lengths[i]] in one call with the GIL released.
        Results are packed into `out`; out_offsets/out_lengths/statuses get one entry per packet.
        Returns the number of packets with status OK."""
        cdef int nh = self._next_header(next_header)
        cdef size_t n = <size_t>offsets.shape[0], ok
        if lengths.shape[0] != offsets.shape[0] or out_offsets.shape[0] < offsets.shape[0] \
                or out_lengths.shape[0] < offsets.shape[0] or statuses.shape[0] < offsets.shape[0]:
            _raise_for_status(ESP_ERR_INVALID, "batch arrays have mismatched lengths")
        if n == 0:
            return 0
        cdef const uint8_t *src = _ptr(buf)
        cdef uint8_t *dst = &out[0] if out.shape[0] else <uint8_t *>NULL
        cdef size_t cap = <size_t>out.shape[0]
        if dst is NULL:
            _raise_for_status(ESP_ERR_BUFFER)
        with nogil:
            ok = esp_encap_batch(self.sa, nh, src, <size_t>buf.shape[0], &offsets[0], &lengths[0], n,
                                 dst, cap, &out_offsets[0], &out_lengths[0], &statuses[0])
        return ok

    # Read rarely (no caller polls them): they always wait for the SA without the GIL.
    @property
    def next_sequence(self) -> int:
        self._check_ready()
        cdef uint64_t v
        with nogil:
            v = esp_sa_next_seq(self.sa)
        return v

    @property
    def highest_sequence(self) -> int:
        self._check_ready()
        cdef uint64_t v
        with nogil:
            v = esp_sa_highest_seq(self.sa)
        return v

    def advance_sequence(self, next_seq) -> None:
        """Move the sequence state forward (never back, so no IV can repeat). Outbound: the next packet
        uses `next_seq`. Inbound: the replay window restarts, empty, just below `next_seq`."""
        self._check_ready()
        if not 0 < next_seq < 2**64:
            _raise_for_status(ESP_ERR_INVALID, "sequence number out of range")
        cdef uint64_t target = <uint64_t>next_seq
        cdef int st
        with nogil:
            st = esp_sa_advance(self.sa, target)
        if st != ESP_OK:
            _raise_for_status(st, "sequence numbers only move forward")

    def limit_sequence(self, last_allowed) -> None:
        """Outbound: never send with a sequence number above `last_allowed` (None: no limit); beyond
        it encapsulation fails as when the sequence space is exhausted."""
        self._check_ready()
        if last_allowed is not None and not 0 < last_allowed < 2**64:
            _raise_for_status(ESP_ERR_INVALID, "sequence number out of range")
        cdef uint64_t target = 0 if last_allowed is None else <uint64_t>last_allowed
        cdef int st
        with nogil:
            st = esp_sa_set_ceiling(self.sa, target)
        if st != ESP_OK:
            _raise_for_status(st, "only an outbound SA has a sequence limit")

    # Polled by the IKE layer's lifetime checks: tried with the GIL held, waited for without it.
    def _lifetime_state(self) -> int:
        self._check_ready()
        cdef int st = esp_sa_lifetime_state_try(self.sa)
        if st == ESP_BUSY:
            with nogil:
                st = esp_sa_lifetime_state(self.sa)
        return st

    def _counts(self):
        self._check_ready()
        cdef esp_stats_t s
        if esp_sa_stats_try(self.sa, &s) == ESP_BUSY:
            with nogil:
                esp_sa_stats(self.sa, &s)
        return s.packets, s.bytes, [s.drops[i] for i in range(ESP_STATUS_COUNT)]


cdef class CoreSATable:
    """Inbound SAs keyed by SPI, for batch decapsulation."""

    cdef esp_table_entry_t *table
    cdef size_t n
    cdef bint udp_encap
    cdef list _sas  # keeps the SAs alive while the table points at them
    cdef uint64_t drops[ESP_STATUS_COUNT]  # packets refused before an SA was found, by status

    def __cinit__(self, *args, **kwargs):
        self.table = NULL
        self.n = 0
        memset(self.drops, 0, sizeof(self.drops))

    def __dealloc__(self):
        free(self.table)

    def _configure(self, list sas, list spis, bint udp_encap):
        cdef size_t i, n
        cdef CoreSA sa
        cdef esp_table_entry_t *table
        if self.table is not NULL:
            _raise_for_status(ESP_ERR_INVALID, "table already configured")
        if len(spis) != len(sas):
            _raise_for_status(ESP_ERR_INVALID, "one SPI per SA")
        n = len(sas)
        # Filled and checked in a local table, published only when complete: a refused configuration
        # must not leave decap_batch a half-initialised table to search.
        table = <esp_table_entry_t *>malloc((n if n else 1) * sizeof(esp_table_entry_t))
        if table is NULL:
            raise MemoryError()
        try:
            for i in range(n):
                sa = <CoreSA?>sas[i]
                if sa.sa is NULL or sa.outbound:
                    _raise_for_status(ESP_ERR_INVALID, "SA table holds inbound SAs only")
                if sa.udp_encap != udp_encap:
                    _raise_for_status(ESP_ERR_INVALID, "all SAs of a table must agree on UDP encapsulation")
                table[i].spi = <uint32_t>spis[i]
                table[i].sa = sa.sa
            esp_table_sort(table, n)
            if esp_table_check_unique(table, n) != 0:
                _raise_for_status(ESP_ERR_INVALID, "duplicate SPI in SA table")
        except BaseException:
            free(table)
            raise
        self._sas = list(sas)
        self.udp_encap = udp_encap
        self.n = n
        self.table = table

    def decap_batch(self, const unsigned char[::1] buf not None, const uint32_t[::1] offsets not None,
                    const uint32_t[::1] lengths not None, unsigned char[::1] out not None,
                    uint32_t[::1] out_offsets not None, uint32_t[::1] out_lengths not None,
                    unsigned char[::1] next_headers not None, unsigned char[::1] statuses not None) -> int:
        """Decapsulate packets buf[offsets[i]:offsets[i]+lengths[i]], each with the SA of its SPI, in one
        call with the GIL released. Inner packets are packed into `out`; per packet: out_offsets,
        out_lengths, next_headers, statuses. Returns the number of packets with status OK."""
        cdef size_t n = <size_t>offsets.shape[0], ok
        if self.table is NULL:
            _raise_for_status(ESP_ERR_INVALID, "table not configured")
        if lengths.shape[0] != offsets.shape[0] or out_offsets.shape[0] < offsets.shape[0] \
                or out_lengths.shape[0] < offsets.shape[0] or statuses.shape[0] < offsets.shape[0] \
                or next_headers.shape[0] < offsets.shape[0]:
            _raise_for_status(ESP_ERR_INVALID, "batch arrays have mismatched lengths")
        if n == 0:
            return 0
        cdef const uint8_t *src = _ptr(buf)
        cdef uint8_t *dst = &out[0] if out.shape[0] else <uint8_t *>NULL
        if dst is NULL:
            _raise_for_status(ESP_ERR_BUFFER)
        with nogil:
            ok = esp_decap_batch(self.table, self.n, self.udp_encap, src, <size_t>buf.shape[0], &offsets[0],
                                 &lengths[0], n, dst, <size_t>out.shape[0], &out_offsets[0], &out_lengths[0],
                                 &next_headers[0], &statuses[0], self.drops)
        return ok

    def _drops(self):
        return [__atomic_load_n(&self.drops[i], __ATOMIC_RELAXED) for i in range(ESP_STATUS_COUNT)]


cdef class ReplayWindow:
    """The C core's RFC 6479 anti-replay window on its own (for tests; SAs embed their own)."""

    cdef esp_replay_t w
    cdef bint ready

    def __cinit__(self, uint32_t window):
        self.ready = False
        if esp_replay_init(&self.w, window) != ESP_OK:
            _raise_for_status(ESP_ERR_INVALID, "bad replay window size")
        self.ready = True

    def __dealloc__(self):
        if self.ready:
            esp_replay_free(&self.w)

    @property
    def last(self) -> int:
        return self.w.last

    @property
    def window(self) -> int:
        return self.w.window

    def reset(self, uint64_t last) -> None:
        esp_replay_reset(&self.w, last)

    def check(self, uint64_t seq) -> int:
        return esp_replay_check(&self.w, seq)

    def update(self, uint64_t seq) -> None:
        esp_replay_update(&self.w, seq)

    def infer(self, uint32_t seq_lo):
        """Full 64-bit sequence number for a received low half (RFC 4303 A2.2), or None."""
        cdef uint64_t seq = 0
        if esp_infer_seq(self.w.last, self.w.window, seq_lo, &seq) != 0:
            return None
        return seq


def send_batch(int fd, const unsigned char[::1] buf not None, const uint32_t[::1] offsets not None,
               const uint32_t[::1] lengths not None, Py_ssize_t skip=0) -> int:
    """sendmmsg the packets buf[offsets[i]+skip : offsets[i]+lengths[i]] on a connected socket, GIL released.
    Returns how many were sent; raises OSError if none could be."""
    cdef size_t sent = 0, n = <size_t>offsets.shape[0]
    cdef int err = 0, rc
    if lengths.shape[0] != offsets.shape[0] or skip < 0:
        _raise_for_status(ESP_ERR_INVALID, "batch arrays have mismatched lengths")
    if n == 0:
        return 0
    cdef const uint8_t *src = _ptr(buf)
    with nogil:
        rc = esp_sock_send_batch(fd, src, <size_t>buf.shape[0], &offsets[0], &lengths[0], n, <size_t>skip,
                                 &sent, &err)
    if rc == -2:
        _raise_for_status(ESP_ERR_INVALID, "packet outside the buffer")
    if rc != 0 and sent == 0:
        import os
        raise OSError(err, os.strerror(err))
    return sent


def recv_batch(int fd, unsigned char[::1] buf not None, Py_ssize_t slot_size, uint32_t[::1] offsets not None,
               uint32_t[::1] lengths not None, *, bint strip_ipv4=False, bint udp_header=False) -> int:
    """recvmmsg up to len(offsets) datagrams into fixed slots of `buf`, GIL released (non-blocking after
    the first). strip_ipv4: raw IPv4 sockets deliver the IP header, skip it. udp_header: leave room for
    and write an RFC 3948 UDP header before each payload (source port from the sender, destination from
    the socket) so the frames suit SAs with udp_encap. Returns the number received (0 if none)."""
    cdef size_t got = 0, n = <size_t>offsets.shape[0]
    cdef int err = 0, rc
    if lengths.shape[0] != offsets.shape[0] or slot_size <= (ESP_UDP_HDR_LEN if udp_header else 0):
        _raise_for_status(ESP_ERR_INVALID, "bad batch arrays or slot size")
    if n == 0:
        return 0
    if n > <size_t>buf.shape[0] // <size_t>slot_size:  # not a product: n * slot_size can wrap around
        _raise_for_status(ESP_ERR_BUFFER, "buffer smaller than len(offsets) * slot_size")
    with nogil:
        rc = esp_sock_recv_batch(fd, &buf[0], <size_t>buf.shape[0], <size_t>slot_size,
                                 ESP_UDP_HDR_LEN if udp_header else 0, n, strip_ipv4, udp_header,
                                 &offsets[0], &lengths[0], &got, &err)
    if rc != 0 and got == 0:
        import errno, os
        if err in (errno.EAGAIN, errno.EWOULDBLOCK):
            return 0
        raise OSError(err, os.strerror(err))
    return got


# ---- the gateway's packet path (esp_fwd.c, esp_inner.c) ------------------------------------------

cdef extern from "esp_inner.h" nogil:
    ctypedef struct inner_info_t:
        uint8_t family
        uint8_t proto
        uint8_t ports_known
        uint8_t df
        uint8_t fragment
        uint16_t sport
        uint16_t dport
        uint16_t l4_offset
        uint16_t length
        uint8_t src[16]
        uint8_t dst[16]
    ctypedef struct inner_selector_t:
        uint8_t family
        uint8_t proto
        uint16_t port_lo
        uint16_t port_hi
        uint8_t lo[16]
        uint8_t hi[16]
    int inner_parse(const uint8_t *pkt, size_t len, inner_info_t *info)
    int inner_clamp_mss(uint8_t *pkt, const inner_info_t *info, uint16_t mss)
    size_t inner_too_big(const uint8_t *pkt, const inner_info_t *info, uint16_t mtu, const uint8_t *src,
                         uint8_t *out, size_t out_cap)


cdef extern from "esp_fwd.h" nogil:
    enum:
        FWD_BATCH
        FWD_MAX_INNER
        FWD_MAX_SLOTS
        FWD_MAX_WORKERS
        FWD_MAX_SELECTORS
        FWD_DROP_COUNT
        FWD_COUNTERS
    ctypedef struct esp_fwd_t:
        pass
    ctypedef struct esp_fwd_tunnel_t:
        uint32_t slot
        esp_sa_t *in_sa
        esp_sa_t *out_sa
        uint32_t spi_in
        int udp_encap
        uint8_t peer_family
        uint8_t peer_addr[16]
        uint16_t peer_port
        uint16_t mtu
        uint16_t mss
        uint32_t sel_offset
        uint32_t n_local
        uint32_t n_remote
        uint32_t bound_worker
        uint8_t l2_ok
        uint8_t l2_dst[6]
        uint8_t l2_src[6]
        uint16_t l2_mtu
        uint8_t local_addr[16]
    ctypedef struct esp_fwd_xsk_t:
        void *ctx
        uint8_t *area
        size_t area_len
        size_t (*recv)(void *ctx, uint64_t *addrs, uint32_t *lens, size_t max) noexcept nogil
        void (*release)(void *ctx, const uint64_t *addrs, size_t n) noexcept nogil
        int fd
        uint16_t natt_port
        size_t (*tx_frames)(void *ctx, uint64_t *addrs, size_t n) noexcept nogil
        size_t (*send)(void *ctx, const uint64_t *addrs, const uint32_t *lens, size_t n) noexcept nogil
        size_t frame_size
    ctypedef struct esp_fwd_io_t:
        int tun_fd
        int udp_fd
        int raw_fd
        int raw_rx
        int vnet_hdr
        int stop_fd
        int worker
        const esp_fwd_xsk_t *xsk
    enum:
        FWD_MAX_MAPPINGS
    ctypedef struct esp_fwd_mapping_t:
        uint32_t spi
        uint8_t family
        uint8_t addr[16]
        uint16_t port
    int esp_fwd_mapping_fd(const esp_fwd_t *dp)
    size_t esp_fwd_take_mappings(esp_fwd_t *dp, esp_fwd_mapping_t *out, size_t max)
    esp_fwd_t *esp_fwd_new(uint32_t max_slots)
    void esp_fwd_free(esp_fwd_t *dp)
    int esp_fwd_set_tables(esp_fwd_t *dp, const esp_fwd_tunnel_t *tunnels, size_t n, const inner_selector_t *sels,
                           size_t n_sels, const uint8_t *icmp_src4, const uint8_t *icmp_src6)
    int esp_fwd_run(esp_fwd_t *dp, const esp_fwd_io_t *io)
    int esp_fwd_poll_once(esp_fwd_t *dp, const esp_fwd_io_t *io)
    void esp_fwd_slot_counters(esp_fwd_t *dp, uint32_t slot, uint64_t *out)
    void esp_fwd_global_drops(esp_fwd_t *dp, uint64_t *out)
    int esp_fwd_attach_steering(int fd, uint32_t workers)
    int esp_fwd_attach_raw_steering(int fd, int family, uint32_t workers, uint32_t index)


def _forwarder_limits():
    return {"batch": FWD_BATCH, "max_inner": FWD_MAX_INNER, "max_slots": FWD_MAX_SLOTS,
            "max_selectors": FWD_MAX_SELECTORS, "drop_count": FWD_DROP_COUNT, "max_workers": FWD_MAX_WORKERS}


cdef int _fill_selector(inner_selector_t *s, tuple ts) except -1:
    """(family, protocol, port_lo, port_hi, low address bytes, high address bytes) -> s."""
    cdef bytes lo = ts[4], hi = ts[5]
    cdef size_t alen = 4 if ts[0] == 4 else 16
    if ts[0] not in (4, 6) or len(lo) != alen or len(hi) != alen:
        _raise_for_status(ESP_ERR_INVALID, "selector: family 4 or 6 with addresses of that length")
    memset(s, 0, sizeof(inner_selector_t))
    s.family = <uint8_t>ts[0]
    s.proto = <uint8_t>ts[1]
    s.port_lo = <uint16_t>ts[2]
    s.port_hi = <uint16_t>ts[3]
    memcpy(s.lo, <const char *>lo, alen)
    memcpy(s.hi, <const char *>hi, alen)
    return 0


cdef int _fill_xsk(esp_fwd_xsk_t *x, tuple handle) except -1:
    ctx, area, area_len, recv, release, fd, natt_port, tx_frames, send, frame_size = handle
    if not ctx or not area or not recv or not release or not 0 < area_len <= FRAME_AREA_MAX:
        _raise_for_status(ESP_ERR_INVALID, "xsk: null pointers or an area beyond 4 GiB")
    if bool(tx_frames) != bool(send) or (send and not FRAME_MIN_TX_SIZE <= frame_size <= area_len):
        _raise_for_status(ESP_ERR_INVALID, "xsk: both send functions or neither, and frames inside the area")
    x.ctx = <void *><uintptr_t>ctx
    x.area = <uint8_t *><uintptr_t>area
    x.area_len = <size_t>area_len
    x.recv = <size_t (*)(void *, uint64_t *, uint32_t *, size_t) noexcept nogil><uintptr_t>recv
    x.release = <void (*)(void *, const uint64_t *, size_t) noexcept nogil><uintptr_t>release
    x.fd = fd
    x.natt_port = natt_port
    x.tx_frames = <size_t (*)(void *, uint64_t *, size_t) noexcept nogil><uintptr_t>tx_frames
    x.send = <size_t (*)(void *, const uint64_t *, const uint32_t *, size_t) noexcept nogil><uintptr_t>send
    x.frame_size = <size_t>frame_size
    return 0


cdef int _fill_l2(esp_fwd_tunnel_t *t, tuple l2) except -1:
    """(next hop MAC, device MAC, device MTU, outer source address) -> the tunnel's frame headers."""
    cdef bytes dst_mac = l2[0], src_mac = l2[1], local = l2[3]
    cdef int mtu = l2[2]
    if len(dst_mac) != 6 or len(src_mac) != 6 or not 0 < mtu <= 65535:
        _raise_for_status(ESP_ERR_INVALID, "l2: two 6-byte MAC addresses and an MTU of 1..65535")
    if len(local) != (4 if t.peer_family == 4 else 16):
        _raise_for_status(ESP_ERR_INVALID, "l2: the source address is of the peer's family")
    memcpy(t.l2_dst, <const char *>dst_mac, 6)
    memcpy(t.l2_src, <const char *>src_mac, 6)
    memcpy(t.local_addr, <const char *>local, len(local))
    t.l2_mtu = <uint16_t>mtu
    t.l2_ok = 1
    return 0


cdef class CoreForwarder:
    """The C packet path: tunnels in one immutable table, workers that run it without the GIL."""

    cdef esp_fwd_t *dp
    cdef list _held  # the SAs the current table points at: alive until the next table replaces it
    cdef readonly uint32_t max_slots

    def __cinit__(self, uint32_t max_slots):
        self.dp = esp_fwd_new(max_slots)
        if self.dp is NULL:
            _raise_for_status(ESP_ERR_INVALID, f"max_slots must be 1..{FWD_MAX_SLOTS}")
        self.max_slots = max_slots
        self._held = []

    def __dealloc__(self):
        esp_fwd_free(self.dp)  # the owner joins every worker first

    def set_tunnels(self, list tunnels, icmp_src4=None, icmp_src6=None) -> None:
        """Replace every tunnel. Each is (slot, inbound CoreSA or None, outbound CoreSA or None, inbound SPI,
        udp_encap, peer address (4 bytes IPv4, 16 bytes IPv6), peer UDP port, MTU, MSS clamp (0 off), local selectors,
        remote selectors[, worker[, l2]]); outbound policy order is the list order (most specific first).
        worker (default -1, any): only that worker sends on the outbound SA (RFC 9611 per-resource SAs).
        l2 (default None): (next hop MAC, device MAC, device MTU, outer source address) for a worker with
        an XSK to send this tunnel's ESP as frames from its UMEM; None: on the sockets."""
        cdef size_t n = len(tunnels), n_sels = 0, i, k
        cdef CoreSA sa
        cdef bytes peer
        cdef const uint8_t *src4 = NULL
        cdef const uint8_t *src6 = NULL
        cdef int rc
        for tunnel in tunnels:
            if len(tunnel[9]) > FWD_MAX_SELECTORS or len(tunnel[10]) > FWD_MAX_SELECTORS:
                _raise_for_status(ESP_ERR_INVALID, f"at most {FWD_MAX_SELECTORS} traffic selectors per side")
            n_sels += len(tunnel[9]) + len(tunnel[10])
        cdef esp_fwd_tunnel_t *ts = <esp_fwd_tunnel_t *>calloc(n if n else 1, sizeof(esp_fwd_tunnel_t))
        cdef inner_selector_t *sels = <inner_selector_t *>calloc(n_sels if n_sels else 1, sizeof(inner_selector_t))
        held = []
        try:
            if ts is NULL or sels is NULL:
                raise MemoryError()
            k = 0
            for i in range(n):
                tunnel = tunnels[i]
                ts[i].slot = <uint32_t>tunnel[0]
                if tunnel[1] is not None:
                    sa = <CoreSA?>tunnel[1]
                    if sa.sa is NULL or sa.outbound or sa.udp_encap:
                        _raise_for_status(ESP_ERR_INVALID, "inbound SA: a configured inbound SA without UDP header")
                    ts[i].in_sa = sa.sa
                    held.append(sa)
                if tunnel[2] is not None:
                    sa = <CoreSA?>tunnel[2]
                    if sa.sa is NULL or not sa.outbound or sa.udp_encap or not sa.tunnel:
                        _raise_for_status(ESP_ERR_INVALID, "outbound SA: a configured tunnel-mode outbound SA "
                                                           "without UDP header")
                    ts[i].out_sa = sa.sa
                    held.append(sa)
                ts[i].spi_in = <uint32_t>tunnel[3]
                ts[i].udp_encap = 1 if tunnel[4] else 0
                peer = tunnel[5]
                if len(peer) not in (4, 16):
                    _raise_for_status(ESP_ERR_INVALID, "peer address: IPv4 (4 bytes) or IPv6 (16 bytes)")
                ts[i].peer_family = 4 if len(peer) == 4 else 6
                memcpy(ts[i].peer_addr, <const char *>peer, len(peer))
                ts[i].peer_port = <uint16_t>tunnel[6]
                ts[i].mtu = <uint16_t>tunnel[7]
                ts[i].mss = <uint16_t>tunnel[8]
                ts[i].sel_offset = <uint32_t>k
                ts[i].n_local = <uint32_t>len(tunnel[9])
                ts[i].n_remote = <uint32_t>len(tunnel[10])
                for selector in (*tunnel[9], *tunnel[10]):
                    _fill_selector(&sels[k], selector)
                    k += 1
                worker = tunnel[11] if len(tunnel) > 11 else -1
                if not -1 <= worker < FWD_MAX_WORKERS:
                    _raise_for_status(ESP_ERR_INVALID, f"worker: -1 (any) or 0..{FWD_MAX_WORKERS - 1}")
                ts[i].bound_worker = <uint32_t>(worker + 1)
                l2 = tunnel[12] if len(tunnel) > 12 else None
                if l2 is not None:
                    _fill_l2(&ts[i], l2)
            if icmp_src4 is not None:
                if len(icmp_src4) != 4:
                    _raise_for_status(ESP_ERR_INVALID, "icmp_src4: 4 bytes")
                src4 = <const uint8_t *><const char *>icmp_src4
            if icmp_src6 is not None:
                if len(icmp_src6) != 16:
                    _raise_for_status(ESP_ERR_INVALID, "icmp_src6: 16 bytes")
                src6 = <const uint8_t *><const char *>icmp_src6
            with nogil:  # waits for the workers' current batches
                rc = esp_fwd_set_tables(self.dp, ts, n, sels, n_sels, src4, src6)
            if rc == -2:
                raise MemoryError()
            if rc != 0:
                _raise_for_status(ESP_ERR_INVALID, "tunnel table refused (slot, MTU, duplicate inbound SPI)")
            self._held = held  # only now may the SAs of the previous table go
        finally:
            free(ts)
            free(sels)

    def run(self, int tun_fd, int udp_fd, int raw_fd, int stop_fd, *, bint raw_rx=True, bint vnet_hdr=False,
            int worker=0, xsk=None) -> None:
        """One worker: process packets without the GIL until `stop_fd` is readable. raw_fd (or -1) is
        for sending raw ESP; raw_rx: this worker also reads it (a shared socket: one worker only; or one
        socket per worker with attach_raw_steering); vnet_hdr: the TUN queue carries virtio_net_hdr
        frames with TSO (IFF_VNET_HDR, TUNSETOFFLOAD); worker: this worker's index (bound tunnels);
        xsk: an AF_XDP socket as (ctx, area, area_len, recv, release, fd, natt_port, tx_frames, send,
        frame_size), the pointers as integers (ikev2lib.xdp.XskSocket.forwarder_handle; tx_frames and
        send 0: it only receives); the caller keeps it open until this returns."""
        cdef esp_fwd_io_t io
        cdef esp_fwd_xsk_t x
        cdef int rc
        memset(&io, 0, sizeof(io))  # every field, present and future, starts as "none"
        io.tun_fd, io.udp_fd, io.raw_fd, io.stop_fd, io.raw_rx = tun_fd, udp_fd, raw_fd, stop_fd, raw_rx
        io.vnet_hdr, io.worker, io.xsk = vnet_hdr, worker, NULL
        if xsk is not None:
            _fill_xsk(&x, xsk)
            io.xsk = &x
        with nogil:
            rc = esp_fwd_run(self.dp, &io)
        if rc != 0:
            import errno as _errno
            raise OSError(_errno.EIO, "forwarding worker stopped on a poll error")

    def poll_once(self, int tun_fd, int udp_fd, int raw_fd, int stop_fd, *, bint raw_rx=True,
                  bint vnet_hdr=False, int worker=0) -> None:
        """Process what is ready on the descriptors once, without waiting (tests)."""
        cdef esp_fwd_io_t io
        memset(&io, 0, sizeof(io))  # no XSK: a stale stack word there would be read as one
        io.tun_fd, io.udp_fd, io.raw_fd, io.stop_fd, io.raw_rx = tun_fd, udp_fd, raw_fd, stop_fd, raw_rx
        io.vnet_hdr, io.worker, io.xsk = vnet_hdr, worker, NULL
        with nogil:
            esp_fwd_poll_once(self.dp, &io)

    def mapping_fd(self) -> int:
        """A descriptor that is readable while `take_mappings` has something (the forwarder owns it)."""
        return esp_fwd_mapping_fd(self.dp)

    def take_mappings(self) -> list:
        """Authentic UDP-encapsulated ESP that came from another address or port than its tunnel's peer
        (a NAT's new mapping, RFC 7296 2.23), each (inbound SPI, address, port) once: the control plane
        decides whether the SA follows."""
        cdef esp_fwd_mapping_t m[FWD_MAX_MAPPINGS]
        cdef size_t n = esp_fwd_take_mappings(self.dp, m, FWD_MAX_MAPPINGS)
        found = []
        for i in range(n):
            packed = bytes(m[i].addr[:4] if m[i].family == 4 else m[i].addr[:16])
            found.append((m[i].spi, str(ipaddress.ip_address(packed)), m[i].port))
        return found

    def slot_counters(self, uint32_t slot) -> tuple:
        """(packets in, bytes in, packets out, bytes out, [drops by reason]) of one slot."""
        cdef uint64_t c[FWD_COUNTERS]
        esp_fwd_slot_counters(self.dp, slot, c)
        return c[0], c[1], c[2], c[3], [c[4 + i] for i in range(FWD_DROP_COUNT)]

    def global_drops(self) -> list:
        cdef uint64_t d[FWD_DROP_COUNT]
        esp_fwd_global_drops(self.dp, d)
        return [d[i] for i in range(FWD_DROP_COUNT)]


def attach_steering(int fd, uint32_t workers) -> None:
    """Steer a SO_REUSEPORT UDP/4500 group: IKE and keepalives to socket 0, ESP to 1 + SPI % workers."""
    if esp_fwd_attach_steering(fd, workers) != 0:
        err = errno
        import os
        raise OSError(err, os.strerror(err))


def attach_raw_steering(int fd, int family, uint32_t workers, uint32_t index) -> None:
    """On worker `index`'s raw ESP socket (family 4 or 6): keep the ESP whose SPI % workers == index
    (and, for worker 0, packets too short to hold an SPI)."""
    if esp_fwd_attach_raw_steering(fd, family, workers, index) != 0:
        err = errno
        import os
        raise OSError(err, os.strerror(err))


def _inner_parse(const unsigned char[::1] pkt not None):
    """inner_parse for tests: None, or (family, proto, ports_known, df, fragment, sport, dport, length)."""
    cdef inner_info_t info
    if inner_parse(_ptr(pkt), <size_t>pkt.shape[0], &info) != 0:
        return None
    return info.family, info.proto, info.ports_known, info.df, info.fragment, info.sport, info.dport, info.length


def _inner_clamp_mss(unsigned char[::1] pkt not None, uint16_t mss) -> bool:
    cdef inner_info_t info
    if pkt.shape[0] == 0 or inner_parse(&pkt[0], <size_t>pkt.shape[0], &info) != 0:
        return False
    return inner_clamp_mss(&pkt[0], &info, mss) == 1


def _inner_too_big(const unsigned char[::1] pkt not None, uint16_t mtu, src=None) -> bytes:
    cdef inner_info_t info
    cdef uint8_t out[1280]
    cdef const uint8_t *s = NULL
    if inner_parse(_ptr(pkt), <size_t>pkt.shape[0], &info) != 0:
        return b""
    if src is not None:
        if len(src) != (4 if info.family == 4 else 16):
            _raise_for_status(ESP_ERR_INVALID, "src address of the packet's family")
        s = <const uint8_t *><const char *>src
    cdef size_t n = inner_too_big(_ptr(pkt), &info, mtu, s, out, sizeof(out))
    return (<char *>out)[:n]


# ---- Ethernet frames of the AF_XDP path (esp_frame.c) ---------------------------------------------

cdef extern from "esp_frame.h" nogil:
    enum:
        FRAME_ETH_ALEN
        FRAME_MAX_VLANS
        FRAME_NATT_PORT
        FRAME_DROP_NONE

    ctypedef struct esp_frame_config_t:
        uint16_t natt_port

    ctypedef struct esp_frame_t:
        uint8_t verdict
        uint8_t reason
        uint8_t family
        uint8_t proto
        uint8_t n_vlans
        uint16_t vlan[FRAME_MAX_VLANS]
        uint16_t ethertype
        uint16_t sport
        uint16_t dport
        uint32_t l3_offset
        uint32_t esp_offset
        uint32_t esp_len
        uint32_t spi
        uint8_t src[16]
        uint8_t dst[16]

    ctypedef struct esp_frame_tx_t:
        uint8_t dst_mac[FRAME_ETH_ALEN]
        uint8_t src_mac[FRAME_ETH_ALEN]
        uint8_t vlan
        uint16_t vlan_tci
        uint8_t family
        uint8_t udp_encap
        uint8_t tclass
        uint16_t ip_id
        uint32_t flow_label
        uint16_t sport
        uint16_t dport
        uint8_t src[16]
        uint8_t dst[16]

    int esp_frame_parse(const uint8_t *frame, size_t len, const esp_frame_config_t *cfg, esp_frame_t *out)
    const char *esp_frame_verdict_name(int verdict)
    const char *esp_frame_drop_name(int reason)
    size_t esp_frame_header_len(const esp_frame_tx_t *tx)
    size_t esp_frame_build(const esp_frame_tx_t *tx, uint8_t *out, size_t cap, size_t esp_len)
    size_t esp_frame_parse_batch(const uint8_t *area, size_t area_len, const uint64_t *addrs, const uint32_t *lens,
                                 size_t n, const esp_frame_config_t *cfg, uint32_t *esp_offs, uint32_t *esp_lens,
                                 uint8_t *verdicts, uint8_t *reasons)
    size_t esp_frame_encap_batch(esp_sa_t *sa, const esp_frame_tx_t *tx, const uint8_t *inp, size_t in_len,
                                 const uint32_t *offs, const uint32_t *lens, size_t n, uint8_t *area,
                                 size_t area_len, const uint64_t *frame_addrs, size_t frame_cap,
                                 uint32_t *frame_lens, uint8_t *statuses, uint16_t *next_ip_id)

FRAME_AREA_MAX = 0xFFFFFFFF  # batch offsets are 32-bit: a UMEM area beyond 4 GiB is refused
FRAME_MIN_TX_SIZE = 256  # smallest UMEM frame the forwarder sends from: the headers and a small ESP packet


def frame_parse_batch(const unsigned char[::1] area not None, const uint64_t[::1] addrs not None,
                      const uint32_t[::1] lens not None, size_t n, uint32_t[::1] esp_offsets not None,
                      uint32_t[::1] esp_lengths not None, unsigned char[::1] verdicts not None,
                      unsigned char[::1] reasons not None, int natt_port=FRAME_NATT_PORT) -> int:
    """Classify frames area[addrs[i]:addrs[i]+lens[i]] (an AF_XDP UMEM) for i < n with the GIL released:
    esp_offsets/esp_lengths locate each ESP packet in the area, ready for SATable.decap_batch (length 0
    for frames that are not ESP); verdicts/reasons per frame (esp_frame.h). Returns the ESP frames."""
    cdef esp_frame_config_t cfg
    cdef size_t found
    if not 0 <= natt_port <= 0xFFFF:
        _raise_for_status(ESP_ERR_INVALID, "natt_port: 0..65535 (0: no NAT-T)")
    if n > <size_t>addrs.shape[0] or n > <size_t>lens.shape[0] or n > <size_t>esp_offsets.shape[0] \
            or n > <size_t>esp_lengths.shape[0] or n > <size_t>verdicts.shape[0] or n > <size_t>reasons.shape[0]:
        _raise_for_status(ESP_ERR_INVALID, "batch arrays shorter than n")
    if <size_t>area.shape[0] > FRAME_AREA_MAX:
        _raise_for_status(ESP_ERR_INVALID, "area larger than 4 GiB")
    if n == 0:
        return 0
    cfg.natt_port = <uint16_t>natt_port
    cdef const uint8_t *base = _ptr(area)
    with nogil:
        found = esp_frame_parse_batch(base, <size_t>area.shape[0], &addrs[0], &lens[0], n, &cfg,
                                      &esp_offsets[0], &esp_lengths[0], &verdicts[0], &reasons[0])
    return found


cdef class FrameTemplate:
    """The outer headers of one tunnel's frames on the wire (esp_frame_tx_t): MACs, optional 802.1Q
    tag, IPv4 or IPv6 addresses, and UDP ports for ESP in UDP. `ip_id` counts IPv4 identifications."""

    cdef esp_frame_tx_t tx

    def __init__(self, *, int family, bytes src not None, bytes dst not None, bytes dst_mac not None,
                 bytes src_mac not None, udp_ports=None, vlan_tci=None, uint16_t ip_id=0, uint8_t tclass=0,
                 uint32_t flow_label=0):
        cdef size_t alen = 4 if family == 4 else 16
        if family not in (4, 6) or len(src) != alen or len(dst) != alen:
            _raise_for_status(ESP_ERR_INVALID, "family 4 or 6 with addresses of that length")
        if len(dst_mac) != FRAME_ETH_ALEN or len(src_mac) != FRAME_ETH_ALEN:
            _raise_for_status(ESP_ERR_INVALID, "MAC addresses: 6 bytes")
        memset(&self.tx, 0, sizeof(self.tx))
        memcpy(self.tx.dst_mac, <const char *>dst_mac, FRAME_ETH_ALEN)
        memcpy(self.tx.src_mac, <const char *>src_mac, FRAME_ETH_ALEN)
        memcpy(self.tx.src, <const char *>src, alen)
        memcpy(self.tx.dst, <const char *>dst, alen)
        self.tx.family = <uint8_t>family
        if udp_ports is not None:
            self.tx.udp_encap = 1
            self.tx.sport, self.tx.dport = udp_ports
        if vlan_tci is not None:
            self.tx.vlan = 1
            self.tx.vlan_tci = vlan_tci
        self.tx.tclass, self.tx.ip_id, self.tx.flow_label = tclass, ip_id, flow_label
        if esp_frame_header_len(&self.tx) == 0:
            _raise_for_status(ESP_ERR_INVALID, "flow label: 20 bits")

    @property
    def header_len(self) -> int:
        return esp_frame_header_len(&self.tx)

    @property
    def ip_id(self) -> int:
        return self.tx.ip_id

    def encap_batch(self, CoreSA sa not None, const unsigned char[::1] buf not None,
                    const uint32_t[::1] offsets not None, const uint32_t[::1] lengths not None,
                    unsigned char[::1] area not None, const uint64_t[::1] frame_addrs not None, size_t frame_cap,
                    uint32_t[::1] frame_lengths not None, unsigned char[::1] statuses not None) -> int:
        """Encrypt inner packets buf[offsets[i]:offsets[i]+lengths[i]] with the outbound SA straight into
        the frames at area[frame_addrs[i]:] (frame_cap bytes each: an AF_XDP UMEM), behind these headers,
        with the GIL released. frame_lengths/statuses per packet. Returns the frames ready to send."""
        cdef size_t n = <size_t>offsets.shape[0], ok
        cdef uint16_t next_id
        sa._check_ready()
        if not sa.outbound or sa.udp_encap or not sa.tunnel:
            _raise_for_status(ESP_ERR_INVALID, "a tunnel-mode outbound SA without UDP header (the frame has it)")
        if <size_t>lengths.shape[0] != n or <size_t>frame_addrs.shape[0] < n or <size_t>frame_lengths.shape[0] < n \
                or <size_t>statuses.shape[0] < n:
            _raise_for_status(ESP_ERR_INVALID, "batch arrays have mismatched lengths")
        if n == 0:
            return 0
        if area.shape[0] == 0:
            _raise_for_status(ESP_ERR_BUFFER)
        cdef const uint8_t *src = _ptr(buf)
        with nogil:
            ok = esp_frame_encap_batch(sa.sa, &self.tx, src, <size_t>buf.shape[0], &offsets[0], &lengths[0], n,
                                       &area[0], <size_t>area.shape[0], &frame_addrs[0], frame_cap,
                                       &frame_lengths[0], &statuses[0], &next_id)
        self.tx.ip_id = next_id
        return ok


def _frame_parse(const unsigned char[::1] frame not None, int natt_port=FRAME_NATT_PORT):
    """esp_frame_parse for tests: the fields of esp_frame_t as a dict, verdict and drop reason by name
    (reason None unless dropped), addresses of the family's length (b"" before an IP header)."""
    cdef esp_frame_config_t cfg
    cdef esp_frame_t r
    if not 0 <= natt_port <= 0xFFFF:
        _raise_for_status(ESP_ERR_INVALID, "natt_port: 0..65535 (0: no NAT-T)")
    cfg.natt_port = <uint16_t>natt_port
    esp_frame_parse(_ptr(frame), <size_t>frame.shape[0], &cfg, &r)
    cdef size_t alen = 0 if r.family == 0 else 4 if r.family == 4 else 16
    return {
        "verdict": esp_frame_verdict_name(r.verdict).decode(),
        "reason": None if r.reason == FRAME_DROP_NONE else esp_frame_drop_name(r.reason).decode(),
        "family": r.family, "proto": r.proto, "ethertype": r.ethertype,
        "src": (<char *>r.src)[:alen], "dst": (<char *>r.dst)[:alen], "sport": r.sport, "dport": r.dport,
        "vlans": tuple([r.vlan[i] for i in range(r.n_vlans)]),
        "l3_offset": r.l3_offset, "esp_offset": r.esp_offset, "esp_len": r.esp_len, "spi": r.spi,
    }


def _frame_build(const unsigned char[::1] esp not None, *, int family, bytes src not None, bytes dst not None,
                 bytes dst_mac not None=b"\x02\x00\x00\x00\x00\x01",
                 bytes src_mac not None=b"\x02\x00\x00\x00\x00\x02", udp_ports=None, vlan_tci=None,
                 uint16_t ip_id=0, uint8_t tclass=0, uint32_t flow_label=0, cap=None) -> bytes:
    """esp_frame_build for tests: the frame with `esp` behind the headers, or b"" when esp_frame_build
    refuses (capacity, IP length). udp_ports: (source, destination) for ESP in UDP, None for raw ESP;
    vlan_tci: one 802.1Q tag; cap: the capacity passed to it (default: exactly enough)."""
    cdef esp_frame_tx_t tx
    cdef size_t alen = 4 if family == 4 else 16
    if family not in (4, 6) or len(src) != alen or len(dst) != alen:
        _raise_for_status(ESP_ERR_INVALID, "family 4 or 6 with addresses of that length")
    if len(dst_mac) != FRAME_ETH_ALEN or len(src_mac) != FRAME_ETH_ALEN:
        _raise_for_status(ESP_ERR_INVALID, "MAC addresses: 6 bytes")
    memset(&tx, 0, sizeof(tx))
    memcpy(tx.dst_mac, <const char *>dst_mac, FRAME_ETH_ALEN)
    memcpy(tx.src_mac, <const char *>src_mac, FRAME_ETH_ALEN)
    memcpy(tx.src, <const char *>src, alen)
    memcpy(tx.dst, <const char *>dst, alen)
    tx.family = <uint8_t>family
    if udp_ports is not None:
        tx.udp_encap = 1
        tx.sport, tx.dport = udp_ports
    if vlan_tci is not None:
        tx.vlan = 1
        tx.vlan_tci = vlan_tci
    tx.tclass, tx.ip_id, tx.flow_label = tclass, ip_id, flow_label
    cdef size_t hdr = esp_frame_header_len(&tx)
    if hdr == 0:
        _raise_for_status(ESP_ERR_INVALID, "flow label: 20 bits")
    cdef size_t n_esp = <size_t>esp.shape[0]
    cdef size_t need = hdr + n_esp
    cdef size_t capacity = need if cap is None else <size_t>cap
    buf = bytearray(max(capacity, need))
    cdef unsigned char[::1] view = buf
    if n_esp:
        memcpy(&view[hdr], &esp[0], n_esp)
    cdef size_t n = esp_frame_build(&tx, &view[0], capacity, n_esp)
    return bytes(buf[:n])
