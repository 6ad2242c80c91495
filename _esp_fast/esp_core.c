#include <openssl/crypto.h>

#include "esp_core.h"

const char *esp_core_openssl_version(void)
{
    return OpenSSL_version(OPENSSL_VERSION);
}
