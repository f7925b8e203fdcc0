/*
 * Out-of-line wrappers for DPDK's static-inline API (see shim.h).
 * Compiled by build.rs with the cflags pkg-config gives for libdpdk.
 */
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

#include "shim.h"

uint16_t tas_rte_eth_rx_burst(uint16_t port_id, uint16_t queue_id,
			      struct rte_mbuf **rx_pkts, uint16_t nb_pkts)
{
	return rte_eth_rx_burst(port_id, queue_id, rx_pkts, nb_pkts);
}

uint16_t tas_rte_eth_tx_burst(uint16_t port_id, uint16_t queue_id,
			      struct rte_mbuf **tx_pkts, uint16_t nb_pkts)
{
	return rte_eth_tx_burst(port_id, queue_id, tx_pkts, nb_pkts);
}

struct rte_mbuf *tas_rte_pktmbuf_alloc(struct rte_mempool *mp)
{
	return rte_pktmbuf_alloc(mp);
}

int tas_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs,
			       unsigned int count)
{
	return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}

void tas_rte_pktmbuf_free(struct rte_mbuf *m)
{
	rte_pktmbuf_free(m);
}

char *tas_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_append(m, len);
}

uint16_t tas_rte_pktmbuf_headroom(const struct rte_mbuf *m)
{
	return rte_pktmbuf_headroom(m);
}

uint16_t tas_rte_pktmbuf_tailroom(const struct rte_mbuf *m)
{
	return rte_pktmbuf_tailroom(m);
}

const void *tas_rte_pktmbuf_read(const struct rte_mbuf *m, uint32_t off,
				 uint32_t len, void *buf)
{
	return rte_pktmbuf_read(m, off, len, buf);
}

void *tas_rte_pktmbuf_mtod(struct rte_mbuf *m)
{
	return rte_pktmbuf_mtod(m, void *);
}

uint16_t tas_rte_pktmbuf_data_len(const struct rte_mbuf *m)
{
	return rte_pktmbuf_data_len(m);
}

uint32_t tas_rte_pktmbuf_pkt_len(const struct rte_mbuf *m)
{
	return rte_pktmbuf_pkt_len(m);
}

uint16_t tas_rte_pktmbuf_nb_segs(const struct rte_mbuf *m)
{
	return m->nb_segs;
}

int tas_rte_errno(void)
{
	return rte_errno;
}

void tas_rte_errno_set(int value)
{
	rte_errno = value;
}

unsigned int tas_rte_lcore_id(void)
{
	return rte_lcore_id();
}
