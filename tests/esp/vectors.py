"""Published ESP test vectors.

GCM: draft-mcgrew-gcm-test-01 ("Test Cases for the use of GCM and GMAC in IPsec ESP"), section 4, the
AES-GCM test cases in the draft's order (the AES-GMAC cases are left out: GMAC is not an ESP transform
here). Each gives key, salt, SPI, sequence number (64-bit when the AAD is 12 bytes: ESN), IV, the ESP
plaintext including its trailer (padding, pad length, next header), and the ciphertext and ICV.

ChaCha20-Poly1305: RFC 7634 Appendix A (ESP example, tunnel mode, IPv4 ICMP echo).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GcmCase:
    name: str
    key: str  # cipher key || salt, hex
    aad: str  # SPI || [seq high] || seq low
    iv: str
    plaintext: str  # ESP payload || padding || pad length || next header
    ciphertext: str
    tag: str

    @property
    def keymat(self) -> bytes:
        return bytes.fromhex(self.key)

    @property
    def spi(self) -> int:
        return int(self.aad[:8], 16)

    @property
    def esn(self) -> bool:
        return len(self.aad) == 24

    @property
    def seq(self) -> int:
        return int(self.aad[8:], 16)

    @property
    def packet(self) -> bytes:
        aad = bytes.fromhex(self.aad)
        return aad[:4] + aad[-4:] + bytes.fromhex(self.iv + self.ciphertext + self.tag)

    @property
    def algorithm(self) -> str:
        return f"aes{(len(self.key) // 2 - 4) * 8}gcm16"


GCM_CASES = [
    GcmCase("#1 aes128 esn", "4c80cdefbb5d10da906ac73c3613a634" "2e443b68", "000043218765432100000000",
            "4956ed7e3b244cfe",
            "45000048699a000080114db7c0a80102c0a801010a9bf15638d301000001000000000000045f736970045f7564700373"
            "69700963796265726369747902646b000021000101020201",
            "fecf537e729d5b07dc30df528dd22b768d1b98736696a6fd348509fa13ceac34cfa2436f14a3f3cf65925bf1f4a13c5d"
            "15b21e1884f5ff6247aeabb786b93bce61bc17d768fd9732",
            "459018148f6cbe722fd04796562dfdb4"),
    GcmCase("#2 aes128", "feffe9928665731c6d6a8f9467308308" "cafebabe", "0000a5f80000000a", "facedbaddecaf888",
            "4500003e698f000080114dccc0a80102c0a801010a980035002a2343b2d001000001000000000000037369700963796265"
            "726369747902646b00000100010001",
            "deb22cd9b07c72c16e3a65beeb8df304a5a5897d33ae530f1ba76d5d114d2a5c3de81827c10e9a4f51330d0eec416642"
            "cfbb85a5b47e48a4ec3b9ba95d918bd1",
            "83b70d3aa8bc6ee4c309e9d85a41ad4a"),
    GcmCase("#3 aes256", "abbccddef00112233445566778899aababbccddef00112233445566778899aab" "11223344",
            "4a2cbfe300000002", "0102030405060708",
            "4500003069a6400080062690c0a801029389155e0a9e008b2dc57ee0000000007002400020bf0000020405b40101040201"
            "020201",
            "ff425c9b724599df7a3bcd510194e00d6a78107f1b0b1cbf06efae9d65a5d763748a637985771d347f0545659f14e99d"
            "ef842d8e",
            "b335f4eecfdbf831824b4c4915956c96"),
    # Test case #4 uses SPI 0, which RFC 4303 section 2.1 forbids on the wire; it is checked at the AEAD
    # level in test_vectors.py (AEAD_ONLY_CASES) and not as an ESP packet.
    GcmCase("#5 aes128 esn", "3de09874b388e6491988d0c3607eae1f" "57690e43", "42f67e3f1010101010101010",
            "4e280000a2fca1a3",
            "4500003c99c300008001cb7c40679318010101010800085c020043006162636465666768696a6b6c6d6e6f70717273747576"
            "7761626364656667686901020201",
            "fba2caa4853cf9f0f22cb10d86dd83b0fec75691cf1a04b00d1138ec9c35791765acbd8701ad79845bf9fe3fba487bc9"
            "1755e6662b4c8d0d1f5e22739530320a",
            "e0d731cc978ecafaeae88f00e80d6e48"),
    GcmCase("#6 aes128 esn", "3de09874b388e6491988d0c3607eae1f" "57690e43", "42f67e3f1010101010101010",
            "4e280000a2fca1a3", "4500001c42a200008001441f406793b6e00000020a00f5ff01020201",
            "fba2ca845e5df9f0f22c3e6e86dd831e1fc65792cd1af9130e1379ed", "369f071f35e034be95f112e4e7d05d35"),
    GcmCase("#7 aes192", "feffe9928665731c6d6a8f9467308308feffe9928665731c" "cafebabe", "0000a5f80000000a",
            "facedbaddecaf888",
            "45000028a4ad4000400678800a01038f0a010612802306b8cb712602dd6bb03e501016d075680001",
            "a5b1f8066029aea40e598b8122de02420938b3ab33f828e687b8858b5bfbdbd0315b27452144cc77",
            "95457b9652037f5318027b5b4cd7a636"),
    GcmCase("#8 aes128 esn", "abbccddef00112233445566778899aab" "decaf888", "000001000000000000000001",
            "cafedebaceface74",
            "4500004933ba00007f119106c3fb1d10c2b1d326c02831ce0035dd7b800302d500004e20001e8c18d75b81dc91baa047"
            "6b91b924b280389d92c963bac046ec959b6266c04722b14923010101",
            "18a6fd42f72cbf4ab2a2ea901f73d814e3e7f243d95412e1c349c1d2fbec168f9190feebaf2cb01984e65863965d7472"
            "b79da345e0e780191f0d2f0e0f496c226f2127b27db35724e7845d68",
            "651f57e65f354f75ff17015769623436"),
    GcmCase("#9 aes256 esn", "abbccddef00112233445566778899aababbccddef00112233445566778899aab" "73616c74",
            "17405e67156f3126dd0db99b", "616e640169766563",
            "45080028732c00004006e9f90a0106120a01038f06b88023dd6bafbecb71260250101f646d540001",
            "f2d69ecdbd5a0d5b8d5ef38bad4da58d1f278fde98ef67549d524a3018d9a57ff4d3a31ce673119e",
            "451626c2415771e3b7eebca614c89b35"),
    GcmCase("#10 aes128 esn", "3de09874b388e6491988d0c3607eae1f" "57690e43", "42f67e3f1010101010101010",
            "4e280000a2fca1a3",
            "45000049333e00007f119182c3fb1d10c2b1d326c02831ce0035cb458003025b000001e0001e8c18d65759d52284a035"
            "2c71475c8880391c764d6e5ee0496b325ae270c03899493915010101",
            "fba2cad12fc1f9f00d3cebf305410db83d7784b607323d220f24b0a97d54182800cadb0f68d99ef0e0c0c89ae9bea888"
            "4e52d65bc1afd0740f742444747b5b39ab533163aad4550ee5160975",
            "cdb608c5769189609763b8e18caa81e2"),
    GcmCase("#11 aes256 esn", "abbccddef00112233445566778899aababbccddef00112233445566778899aab" "73616c74",
            "17405e67156f3126dd0db99b", "616e640169766563",
            "636973636f0172756c657301746865016e6574776501646566696e6501746865746563686e6f6c6f676965730174686174"
            "77696c6c01646566696e65746f6d6f72726f7701020201",
            "d4b7ed86a1777f2ea13d6973d324c69e7b43f826fb56831226508bebd2dceb18d0a6df10e5487df074113e14c641024e"
            "3e6773d91a62ee429b043a10e3efe6b012a49363412364f8",
            "c0cac587f249e56b11e24f30e44ccc76"),
    GcmCase("#12 aes128 empty payload", "7d773d00c144c525ac619d18c84a3f47" "d9664267", "335467aeffffffff",
            "43457e9182443bc6", "01020201", "437f866b", "cb3f699fe9b0822bac961c4504bef270"),
    GcmCase("#13 aes128 esn", "abbccddef00112233445566778899aab" "decaf888", "000001000000000000000001",
            "cafedebaceface74", "746f016265016f72016e6f7401746f0162650001",
            "29c9fc69a197d038ccdd14e2ddfcaa0543332164", "412503524303ed3c6c5f283843af8c3e"),
    GcmCase("#14 aes256 esn max seq", "6c6567616c697a656d6172696a75616e61616e64646f69746265666f72656961" "74757"
            "26e", "796b6963ffffffffffffffff", "333021696765746d",
            "45000030da3a00008001df3bc0a80005c0a800010800c6cd020007006162636465666768696a6b6c6d6e6f707172737401"
            "020201",
            "f97ab2aa356d8edce17644ac8c78e25dd24dedbb29ebf1b64a274b39b49c3a864cd3d78ca4ae68a32b42458fb57dbe82"
            "1dcc63b9",
            "d0937ba2945f669368661a329fb4c053"),
]  # fmt: skip

# draft-mcgrew-gcm-test-01 section 4, test case #4: SPI 0 (valid AEAD input, not a valid ESP SPI).
AEAD_ONLY_CASES = [
    GcmCase("#4 aes128 spi0", "00000000000000000000000000000000" "00000000", "0000000000000001", "0000000000000000",
            "4500003c99c500008001cb7a40679318010101010800075c020044006162636465666768696a6b6c6d6e6f70717273747576"
            "7761626364656667686901020201",
            "4688daf2f973a392732909c331d56d60f694abaa414b5e7ff5fdcdfff5e9a284456476492719ffb64de7d9dca1e1d894"
            "bc3bd57873ed4d181d19d4d5c8c18af3",
            "f821d496eeb096e98ad2b69e4799c71d"),
]  # fmt: skip

# RFC 7634 Appendix A: tunnel-mode ESP SA, ChaCha20-Poly1305.
RFC7634_KEYMAT = bytes(range(0x80, 0xA0)) + bytes.fromhex("a0a1a2a3")
RFC7634_SPI = 0x01020304
RFC7634_SEQ = 5
RFC7634_IV = bytes.fromhex("1011121314151617")
RFC7634_PLAINTEXT = bytes.fromhex(
    "45000054a6f200004001e778c6336405c000020508005b7a3a080000553bec1000073627"
    "08090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b"
    "2c2d2e2f303132333435363701020204"
)
RFC7634_CIPHERTEXT_TAG = bytes.fromhex(
    "24039428b97f417e3c13753a4f05087b67c352e6a7fab1b982d466ef407ae5c614ee8099"
    "d52844eb61aa95dfab4c02f72aa71e7c4c4f64c9befe2facc638e8f3cbec163fac469b50"
    "2773f6fb94e664da9165b82829f641e076aaa8266b7fb0f7b11b369907e1ad43"
)
RFC7634_PACKET = (
    RFC7634_SPI.to_bytes(4, "big") + RFC7634_SEQ.to_bytes(4, "big") + RFC7634_IV + RFC7634_CIPHERTEXT_TAG
)
