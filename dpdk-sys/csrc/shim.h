/*
 * Out-of-line versions of the DPDK functions and macros that are static
 * inline (or per-lcore variables) in the headers, so that Rust can call them.
 * Each `tas_X` behaves exactly like DPDK's `X`.
 */
#ifndef TAS_DPDK_SHIM_H
#define TAS_DPDK_SHIM_H

#include <stdint.h>

struct rte_mbuf;
struct rte_mempool;

/* rte_ethdev.h */
uint16_t tas_rte_eth_rx_burst(uint16_t port_id, uint16_t queue_id,
			      struct rte_mbuf **rx_pkts, uint16_t nb_pkts);
uint16_t tas_rte_eth_tx_burst(uint16_t port_id, uint16_t queue_id,
			      struct rte_mbuf **tx_pkts, uint16_t nb_pkts);

/* rte_mbuf.h */
struct rte_mbuf *tas_rte_pktmbuf_alloc(struct rte_mempool *mp);
int tas_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs,
			       unsigned int count);
void tas_rte_pktmbuf_free(struct rte_mbuf *m);
char *tas_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
uint16_t tas_rte_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t tas_rte_pktmbuf_tailroom(const struct rte_mbuf *m);
const void *tas_rte_pktmbuf_read(const struct rte_mbuf *m, uint32_t off,
				 uint32_t len, void *buf);

/* Field accessors (struct rte_mbuf stays opaque on the Rust side). */
void *tas_rte_pktmbuf_mtod(struct rte_mbuf *m); /* rte_pktmbuf_mtod(m, void *) */
uint16_t tas_rte_pktmbuf_data_len(const struct rte_mbuf *m); /* m->data_len */
uint32_t tas_rte_pktmbuf_pkt_len(const struct rte_mbuf *m);  /* m->pkt_len */
uint16_t tas_rte_pktmbuf_nb_segs(const struct rte_mbuf *m);  /* m->nb_segs */

/* rte_errno.h, rte_lcore.h: per-lcore (thread-local) values. */
int tas_rte_errno(void);
void tas_rte_errno_set(int value);
unsigned int tas_rte_lcore_id(void);

#endif
