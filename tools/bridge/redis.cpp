#include "bridge/redis.hpp"

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <charconv>

namespace shmstream_cli {

using shmstream::ErrorCode;
using shmstream::Result;
using shmstream::Status;

std::string redacted(std::string_view url) {
  // redis://CREDENTIALS@rest: the credentials go, whatever they hold.
  constexpr std::string_view kScheme = "redis://";
  if (url.substr(0, kScheme.size()) != kScheme) return std::string(url);
  std::string_view rest = url.substr(kScheme.size());
  const size_t at = rest.substr(0, rest.find('/')).rfind('@');
  if (at == std::string_view::npos) return std::string(url);
  return std::string(kScheme) + "***@" + std::string(rest.substr(at + 1));
}

Result<RedisUrl> parse_redis_url(std::string_view url) {
  auto bad = [&](const std::string& why) {
    return Status(ErrorCode::kInvalidArgument, "\"" + redacted(url) + "\": " + why +
                                                   " (expected redis://[user@]host[:port]/key)");
  };
  constexpr std::string_view kScheme = "redis://";
  if (url.substr(0, kScheme.size()) != kScheme) {
    if (url.substr(0, 9) == "rediss://") return bad("TLS (rediss://) is not supported");
    return bad("not a redis:// URL");
  }
  std::string_view rest = url.substr(kScheme.size());
  RedisUrl out;
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  if (slash != std::string_view::npos) out.key = std::string(rest.substr(slash + 1));
  if (size_t at = authority.rfind('@'); at != std::string_view::npos) {
    std::string_view credentials = authority.substr(0, at);
    authority = authority.substr(at + 1);
    size_t colon = credentials.find(':');
    out.user = std::string(credentials.substr(0, colon));
    if (colon != std::string_view::npos) out.password = std::string(credentials.substr(colon + 1));
  }
  std::string_view host = authority;
  if (size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    std::string_view port = authority.substr(colon + 1);
    int value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || end != port.data() + port.size() || value < 1 || value > 65535) {
      return bad("port \"" + std::string(port) + "\" is not a number from 1 to 65535");
    }
    out.port = value;
  }
  if (host.empty()) return bad("no host");
  out.host = std::string(host);
  return out;
}

void Redis::Free::operator()(redisContext* c) const { redisFree(c); }

Redis::Redis(redisContext* context, std::string describe)
    : context_(context), describe_(std::move(describe)) {}
Redis::Redis(Redis&&) noexcept = default;
Redis& Redis::operator=(Redis&&) noexcept = default;
Redis::~Redis() = default;

namespace {

timeval to_timeval(std::chrono::milliseconds t) {
  return timeval{static_cast<time_t>(t.count() / 1000),
                 static_cast<suseconds_t>(t.count() % 1000 * 1000)};
}

RedisReply convert(const redisReply* r) {
  RedisReply out;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out.type = RedisReply::Type::kString;
      out.text.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = RedisReply::Type::kStatus;
      out.text.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = RedisReply::Type::kError;
      out.text.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = RedisReply::Type::kInteger;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = RedisReply::Type::kArray;
      out.elements.reserve(r->elements);
      for (size_t i = 0; i < r->elements; ++i) out.elements.push_back(convert(r->element[i]));
      break;
    default:
      out.type = RedisReply::Type::kNil;
      break;
  }
  return out;
}

void append(redisContext* c, const std::vector<std::string>& argv) {
  std::vector<const char*> args;
  std::vector<size_t> lengths;
  args.reserve(argv.size());
  lengths.reserve(argv.size());
  for (const auto& a : argv) {
    args.push_back(a.data());
    lengths.push_back(a.size());
  }
  redisAppendCommandArgv(c, static_cast<int>(args.size()), args.data(), lengths.data());
}

}  // namespace

Result<Redis> Redis::connect(const RedisUrl& url, std::chrono::milliseconds timeout) {
  std::string describe = "redis " + url.address();
  redisContext* c = redisConnectWithTimeout(url.host.c_str(), url.port, to_timeval(timeout));
  if (c == nullptr) return Status(ErrorCode::kNoSpace, describe + ": out of memory");
  Redis redis(c, describe);
  if (c->err != 0) {
    return Status(ErrorCode::kUnavailable, describe + ": " + c->errstr);
  }
  redisSetTimeout(c, to_timeval(timeout));
  redisEnableKeepAlive(c);
  if (!url.password.empty()) {
    std::vector<std::string> auth = {"AUTH"};
    if (!url.user.empty()) auth.push_back(url.user);
    auth.push_back(url.password);
    auto reply = redis.command(auth);
    if (!reply.ok()) return reply.status();
    if (reply->is_error()) {
      return Status(ErrorCode::kPermissionDenied, describe + ": AUTH refused: " + reply->text);
    }
  }
  return redis;
}

Status Redis::lost(const char* doing) {
  std::string why = context_->err != 0 ? context_->errstr : "connection lost";
  return Status(ErrorCode::kUnavailable, describe_ + ": " + doing + ": " + why);
}

Result<RedisReply> Redis::command(const std::vector<std::string>& argv) {
  auto replies = pipeline({argv});
  if (!replies.ok()) return replies.status();
  return std::move(replies->front());
}

Result<std::vector<RedisReply>> Redis::pipeline(
    const std::vector<std::vector<std::string>>& commands) {
  if (context_->err != 0) return lost("sending");
  for (const auto& argv : commands) append(context_.get(), argv);
  std::vector<RedisReply> replies;
  replies.reserve(commands.size());
  for (size_t i = 0; i < commands.size(); ++i) {
    void* raw = nullptr;
    if (redisGetReply(context_.get(), &raw) != REDIS_OK || raw == nullptr) {
      return lost(commands[i].empty() ? "reading a reply"
                                      : ("reading the reply to " + commands[i][0]).c_str());
    }
    auto* reply = static_cast<redisReply*>(raw);
    replies.push_back(convert(reply));
    freeReplyObject(reply);
  }
  return replies;
}

}  // namespace shmstream_cli
