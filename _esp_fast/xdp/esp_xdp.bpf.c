/* XDP program of the AF_XDP data path: redirect to the queue's XSK only the ESP the gateway holds an
 * SA for, pass everything else to the kernel stack.
 *
 * Ours: IP protocol 50, or UDP to the NAT-T port whose payload is not a NAT keepalive (one 0xFF octet)
 * and does not start with the non-ESP marker (four zero octets: IKE, RFC 3948), with an SPI in `spis`
 * (the control plane adds and removes SPIs as Child SAs come and go). Up to two VLAN tags are looked
 * through. IPv4 fragments and IPv6 extension headers pass: the kernel reassembles and parses those, and
 * the socket path still handles them. Malformed frames pass too: the kernel counts and drops them.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define MAX_QUEUES 256       /* XSKs, one per device queue */
#define MAX_SPIS 262144      /* inbound SAs (esp_fwd.h FWD_MAX_TUNNELS) */
#define VLAN_HDR_LEN 4
#define MAX_VLANS 2
#define ESP_HDR_MIN 8        /* SPI and sequence number */
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, MAX_QUEUES);
    __type(key, __u32);
    __type(value, __u32);
} xsks SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, MAX_SPIS);
    __type(key, __u32);      /* SPI, network order */
    __type(value, __u8);
} spis SEC(".maps");

struct esp_xdp_config {
    __u16 natt_port;         /* host order; 0 = no UDP encapsulation */
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct esp_xdp_config);
} config SEC(".maps");

/* The frame's ESP header, or NULL if the frame is not ESP the data plane could own. */
static __always_inline void *esp_header(void *data, void *end)
{
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end) return NULL;
    __u16 proto = eth->h_proto;
    void *l3 = eth + 1;
#pragma unroll
    for (int i = 0; i < MAX_VLANS; i++) {
        if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD)) break;
        if (l3 + VLAN_HDR_LEN > end) return NULL;
        proto = *(__u16 *)(l3 + 2);
        l3 += VLAN_HDR_LEN;
    }
    __u8 l4proto;
    void *l4;
    if (proto == bpf_htons(ETH_P_IP)) {
        struct iphdr *ip = l3;
        if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl < 5) return NULL;
        if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)) return NULL;
        l4proto = ip->protocol;
        l4 = l3 + ip->ihl * 4;
    } else if (proto == bpf_htons(ETH_P_IPV6)) {
        struct ipv6hdr *ip6 = l3;
        if ((void *)(ip6 + 1) > end) return NULL;
        l4proto = ip6->nexthdr;
        l4 = ip6 + 1;
    } else {
        return NULL;
    }
    if (l4proto == IPPROTO_ESP) return l4 + ESP_HDR_MIN <= end ? l4 : NULL;
    if (l4proto != IPPROTO_UDP) return NULL;
    struct udphdr *udp = l4;
    if ((void *)(udp + 1) > end) return NULL;
    __u32 key = 0;
    struct esp_xdp_config *cfg = bpf_map_lookup_elem(&config, &key);
    if (cfg == NULL || cfg->natt_port == 0 || udp->dest != bpf_htons(cfg->natt_port)) return NULL;
    void *esp = udp + 1;
    if (esp + ESP_HDR_MIN > end || *(__u32 *)esp == 0) return NULL; /* keepalive, marker, too short */
    return esp;
}

SEC("xdp")
int esp_xdp(struct xdp_md *ctx)
{
    void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
    void *esp = esp_header(data, end);
    if (esp == NULL) return XDP_PASS;
    __u32 spi = *(__u32 *)esp;
    if (bpf_map_lookup_elem(&spis, &spi) == NULL) return XDP_PASS; /* not ours: the socket path counts it */
    return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

char LICENSE[] SEC("license") = "Apache-2.0"; /* only helpers open to any licence are used */
