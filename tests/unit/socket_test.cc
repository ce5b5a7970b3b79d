#include "net/socket.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstring>
#include <vector>

namespace spindle::net {
namespace {

// A TCP header (no options) whose sequence number is `seq`, after `ip` as the network header.
std::vector<uint8_t> withTcp(std::vector<uint8_t> ip, uint32_t seq) {
  std::array<uint8_t, 20> tcp{};
  const uint32_t net = htonl(seq);
  std::memcpy(tcp.data() + 4, &net, sizeof(net));
  tcp[12] = 5 << 4;  // data offset: 5 words
  tcp[13] = 0x02;    // SYN
  ip.insert(ip.end(), tcp.begin(), tcp.end());
  return ip;
}

std::vector<uint8_t> ipv4Header(uint8_t ihl_words, uint8_t protocol) {
  std::vector<uint8_t> ip(size_t{ihl_words} * 4, 0);
  ip[0] = static_cast<uint8_t>(0x40 | ihl_words);
  ip[9] = protocol;
  return ip;
}

std::vector<uint8_t> ipv6Header(uint8_t next) {
  std::vector<uint8_t> ip(40, 0);
  ip[0] = 0x60;
  ip[6] = next;
  return ip;
}

TEST(SynSequence, ReadsTheSequenceNumberAfterAnIpv4Header) {
  const auto syn = withTcp(ipv4Header(5, IPPROTO_TCP), 0xdeadbeef);
  EXPECT_EQ(synSequence(syn.data(), syn.size()), 0xdeadbeefu);
}

TEST(SynSequence, SkipsIpv4Options) {
  const auto syn = withTcp(ipv4Header(7, IPPROTO_TCP), 12345);
  EXPECT_EQ(synSequence(syn.data(), syn.size()), 12345u);
}

TEST(SynSequence, ReadsTheSequenceNumberAfterAnIpv6Header) {
  const auto syn = withTcp(ipv6Header(IPPROTO_TCP), 7);
  EXPECT_EQ(synSequence(syn.data(), syn.size()), 7u);
}

TEST(SynSequence, SkipsIpv6ExtensionHeaders) {
  std::vector<uint8_t> ip = ipv6Header(IPPROTO_HOPOPTS);
  std::vector<uint8_t> hop(16, 0);  // hop-by-hop options: (1 + 1) * 8 bytes, then TCP
  hop[0] = IPPROTO_TCP;
  hop[1] = 1;
  ip.insert(ip.end(), hop.begin(), hop.end());
  const auto syn = withTcp(ip, 0x01020304);
  EXPECT_EQ(synSequence(syn.data(), syn.size()), 0x01020304u);
}

TEST(SynSequence, RefusesWhatIsNotAWholeTcpHeader) {
  const auto syn = withTcp(ipv4Header(5, IPPROTO_TCP), 1);
  EXPECT_EQ(synSequence(syn.data(), syn.size() - 1), std::nullopt);
  const auto udp = withTcp(ipv4Header(5, IPPROTO_UDP), 1);
  EXPECT_EQ(synSequence(udp.data(), udp.size()), std::nullopt);
  const auto bad_ihl = withTcp(ipv4Header(4, IPPROTO_TCP), 1);
  EXPECT_EQ(synSequence(bad_ihl.data(), bad_ihl.size()), std::nullopt);
  const auto fragment = withTcp(ipv6Header(IPPROTO_FRAGMENT), 1);
  EXPECT_EQ(synSequence(fragment.data(), fragment.size()), std::nullopt);
  EXPECT_EQ(synSequence(nullptr, 0), std::nullopt);
}

// The kernel's side: the listener keeps each SYN, and the accepted connection gives it once.
TEST(SavedSyn, GivesTheClientsFirstSequenceNumberOnce) {
  auto address = SocketAddress::parseIp("127.0.0.1", 0);
  ASSERT_TRUE(address.ok());
  auto listener = listenTcp(*address, /*reuse_port=*/false, 16);
  ASSERT_TRUE(listener.ok()) << listener.error();
  ASSERT_TRUE(saveSyns(listener->get()).ok());
  sockaddr_in bound{};
  socklen_t len = sizeof(bound);
  ASSERT_EQ(::getsockname(listener->get(), reinterpret_cast<sockaddr*>(&bound), &len), 0);
  EXPECT_EQ(localPort(listener->get()), ntohs(bound.sin_port));

  Fd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  ASSERT_EQ(::connect(client.get(), reinterpret_cast<sockaddr*>(&bound), sizeof(bound)), 0);
  Fd accepted(::accept4(listener->get(), nullptr, nullptr, SOCK_CLOEXEC));
  ASSERT_TRUE(accepted.valid());
  const auto isn = savedSynSequence(accepted.get());
  EXPECT_TRUE(isn.has_value());
  EXPECT_EQ(savedSynSequence(accepted.get()), std::nullopt) << "the SYN is given only once";
}

}  // namespace
}  // namespace spindle::net
