#include "net/address.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>

namespace spindle::net {
namespace {

using namespace std::string_literals;

SocketAddress mustParse(std::string_view text) {
  auto parsed = SocketAddress::parse(text);
  EXPECT_TRUE(parsed.ok()) << text << ": " << (parsed.ok() ? "" : parsed.error());
  return parsed.ok() ? *parsed : SocketAddress();
}

TEST(Address, ParsesIpv4WithPort) {
  SocketAddress addr = mustParse("198.18.0.1:15001");
  EXPECT_EQ(addr.family(), AF_INET);
  EXPECT_TRUE(addr.isV4());
  EXPECT_EQ(addr.port(), 15001);
  EXPECT_EQ(addr.ipString(), "198.18.0.1");
  EXPECT_EQ(addr.length(), sizeof(sockaddr_in));
  const auto* in4 = reinterpret_cast<const sockaddr_in*>(addr.asSockaddr());
  EXPECT_EQ(in4->sin_port, htons(15001));
  EXPECT_EQ(in4->sin_addr.s_addr, inet_addr("198.18.0.1"));
}

TEST(Address, ParsesBracketedIpv6WithPort) {
  SocketAddress addr = mustParse("[2001:2::1]:15001");
  EXPECT_EQ(addr.family(), AF_INET6);
  EXPECT_FALSE(addr.isV4());
  EXPECT_EQ(addr.port(), 15001);
  EXPECT_EQ(addr.ipString(), "2001:2::1");
  EXPECT_EQ(addr.length(), sizeof(sockaddr_in6));
}

TEST(Address, RejectsIpv6WithoutBrackets) {
  auto parsed = SocketAddress::parse("2001:2::1:15001");
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.error().find("brackets"), std::string::npos) << parsed.error();
}

TEST(Address, RejectsBracketsAroundIpv4) {
  // Brackets are the IPv6 spelling; accepting them for IPv4 would let one address have two.
  EXPECT_FALSE(SocketAddress::parse("[198.18.0.1]:80").ok());
}

TEST(Address, RejectsBadPorts) {
  for (const char* text :
       {"1.2.3.4:0", "1.2.3.4:65536", "1.2.3.4:http", "1.2.3.4:", "1.2.3.4:8o", "1.2.3.4:-1",
        "1.2.3.4:+80", "1.2.3.4: 80", "[::1]:0", "[::1]:", "[::1]:99999999999999999999"}) {
    auto parsed = SocketAddress::parse(text);
    ASSERT_FALSE(parsed.ok()) << text;
    EXPECT_NE(parsed.error().find("port must be a number from 1 to 65535"), std::string::npos)
        << text << ": " << parsed.error();
  }
}

TEST(Address, AcceptsPortBounds) {
  EXPECT_EQ(mustParse("1.2.3.4:1").port(), 1);
  EXPECT_EQ(mustParse("1.2.3.4:65535").port(), 65535);
}

TEST(Address, RejectsMissingPortOrHost) {
  EXPECT_FALSE(SocketAddress::parse("1.2.3.4").ok());
  EXPECT_FALSE(SocketAddress::parse(":80").ok());
  EXPECT_FALSE(SocketAddress::parse("[]:80").ok());
  EXPECT_FALSE(SocketAddress::parse("[::1]").ok());
  EXPECT_FALSE(SocketAddress::parse("[::1]80").ok());
  EXPECT_FALSE(SocketAddress::parse("[::1:80").ok());
  EXPECT_FALSE(SocketAddress::parse("").ok());
}

TEST(Address, RejectsNamesAndMalformedIps) {
  for (const char* text :
       {"localhost:80", "1.2.3:80", "1.2.3.256:80", "[fe80::1%eth0]:80", "[::g]:80"}) {
    auto parsed = SocketAddress::parse(text);
    ASSERT_FALSE(parsed.ok()) << text;
    EXPECT_NE(parsed.error().find("is not an IP address"), std::string::npos) << parsed.error();
  }
}

TEST(Address, RejectsTextAfterAnEmbeddedNul) {
  // inet_pton stops at a NUL; the text after it must not be silently dropped.
  EXPECT_FALSE(SocketAddress::parseIp("1.2.3.4\0junk"s, 80).ok());
  EXPECT_FALSE(SocketAddress::parse("1.2.3.4\0:80"s).ok());
}

TEST(Address, SplitHostPortKeepsNames) {
  auto hp = splitHostPort("echo.demo.svc.cluster.local:50051");
  ASSERT_TRUE(hp.ok()) << hp.error();
  EXPECT_EQ(hp->host, "echo.demo.svc.cluster.local");
  EXPECT_EQ(hp->port, 50051);

  auto v6 = splitHostPort("[::1]:8080");
  ASSERT_TRUE(v6.ok()) << v6.error();
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 8080);
}

TEST(Address, ParseIpTakesThePortSeparately) {
  auto v4 = SocketAddress::parseIp("10.0.0.1", 53);
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->toString(), "10.0.0.1:53");
  auto v6 = SocketAddress::parseIp("fd00::1", 53);
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->toString(), "[fd00::1]:53");
  EXPECT_FALSE(SocketAddress::parseIp("[fd00::1]", 53).ok());
}

TEST(Address, FromSockaddrUnmapsV4MappedIpv6) {
  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(4242);
  ASSERT_EQ(inet_pton(AF_INET6, "::ffff:198.18.0.7", &in6.sin6_addr), 1);

  SocketAddress addr =
      SocketAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&in6), sizeof(in6));
  EXPECT_EQ(addr.family(), AF_INET);
  EXPECT_EQ(addr.port(), 4242);
  EXPECT_EQ(addr.toString(), "198.18.0.7:4242");
  EXPECT_EQ(addr, mustParse("198.18.0.7:4242"));
}

TEST(Address, FromSockaddrKeepsPlainIpv6AndIpv4) {
  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(443);
  ASSERT_EQ(inet_pton(AF_INET6, "2001:db8::5", &in6.sin6_addr), 1);
  SocketAddress v6 =
      SocketAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&in6), sizeof(in6));
  EXPECT_EQ(v6.family(), AF_INET6);
  EXPECT_EQ(v6.toString(), "[2001:db8::5]:443");

  sockaddr_in in4{};
  in4.sin_family = AF_INET;
  in4.sin_port = htons(80);
  in4.sin_addr.s_addr = inet_addr("10.1.2.3");
  SocketAddress v4 =
      SocketAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&in4), sizeof(in4));
  EXPECT_EQ(v4.family(), AF_INET);
  EXPECT_EQ(v4.toString(), "10.1.2.3:80");
}

TEST(Address, MappedFormOfIpv4IsFfffPrefixed) {
  MappedBytes expected = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 1};
  EXPECT_EQ(mustParse("198.18.0.1:80").mapped(), expected);
}

TEST(Address, MappedFormOfIpv6IsTheAddress) {
  MappedBytes expected = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01};
  EXPECT_EQ(mustParse("[2001:db8::1]:80").mapped(), expected);
}

TEST(Address, FromMappedRoundTripsBothFamilies) {
  for (const char* text : {"198.18.0.1:15001", "[2001:db8::1]:15001", "0.0.0.0:1", "[::]:9"}) {
    SocketAddress addr = mustParse(text);
    SocketAddress back = SocketAddress::fromMapped(addr.mapped(), htons(addr.port()));
    EXPECT_EQ(back.family(), addr.family()) << text;
    EXPECT_EQ(back, addr) << text;
    EXPECT_EQ(back.toString(), text);
  }
}

TEST(Address, ToStringBracketsIpv6Only) {
  EXPECT_EQ(mustParse("127.0.0.1:80").toString(), "127.0.0.1:80");
  EXPECT_EQ(mustParse("[::1]:80").toString(), "[::1]:80");
  // inet_ntop's canonical form, whatever the input spelling.
  EXPECT_EQ(mustParse("[2001:0DB8:0:0:0:0:0:0001]:80").toString(), "[2001:db8::1]:80");
}

TEST(Address, SetPortChangesOnlyThePort) {
  SocketAddress v4 = mustParse("1.2.3.4:80");
  v4.setPort(8080);
  EXPECT_EQ(v4.toString(), "1.2.3.4:8080");
  SocketAddress v6 = mustParse("[::1]:80");
  v6.setPort(8080);
  EXPECT_EQ(v6.toString(), "[::1]:8080");
}

TEST(Address, EqualityComparesFamilyAddressAndPort) {
  EXPECT_EQ(mustParse("1.2.3.4:80"), mustParse("1.2.3.4:80"));
  EXPECT_FALSE(mustParse("1.2.3.4:80") == mustParse("1.2.3.4:81"));
  EXPECT_FALSE(mustParse("1.2.3.4:80") == mustParse("1.2.3.5:80"));
  // The v4-mapped IPv6 spelling is a different socket address from the IPv4 one.
  EXPECT_FALSE(mustParse("1.2.3.4:80") == mustParse("[::ffff:1.2.3.4]:80"));
}

TEST(Address, DefaultIsIpv4AnyPortZero) {
  SocketAddress addr;
  EXPECT_EQ(addr.family(), AF_INET);
  EXPECT_EQ(addr.toString(), "0.0.0.0:0");
}

}  // namespace
}  // namespace spindle::net
