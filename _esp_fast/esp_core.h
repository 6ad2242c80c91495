/* Plain C core of the ESP data plane: no Python API, so it can be tested and fuzzed on its own. */
#ifndef ESP_CORE_H
#define ESP_CORE_H

const char *esp_core_openssl_version(void);

#endif
