# cython: language_level=3
"""Python face of the C ESP core."""

cdef extern from "esp_core.h":
    const char *esp_core_openssl_version()


def openssl_version() -> str:
    """The libcrypto version the extension is linked against."""
    return esp_core_openssl_version().decode()
