"""The Lua scripts of the rate limits and the budgets, and their KEYS / ARGV layout.

Rate-limit counters are the ``limits`` library's fixed-window keys (INCRBY, EXPIRE on the first
hit), so its ``get_window_stats`` reads them back. A budget of one period is a hash (``spent``:
settled amount, ``reserved``: the sum of the open reservations, ``r:<id>``: each reservation's
amount) and a sorted set of its reservation ids by expiry. Amounts are tokens for a token budget
and millionths of a US dollar for a money budget (``app.limits.budgets``): the scripts only add
and compare integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# KEYS: the fixed-window counters; ARGV: each counter's limit and window in seconds, in pairs.
# Every counter is checked first and all are charged only when every one has room, so a request
# one budget refuses costs the others nothing (a principal flooding its own budget cannot use up
# its tenant's). Returns 1 or 0 (charged), then a count and a TTL per key: the count after the
# charge, or the count the request would have made when refused.
FIXED_WINDOW_HIT = """
local counts = {}
local charge = 1
for i, key in ipairs(KEYS) do
  counts[i] = tonumber(redis.call('GET', key) or '0') + 1
  if counts[i] > tonumber(ARGV[2 * i - 1]) then
    charge = 0
  end
end
local out = {charge}
for i, key in ipairs(KEYS) do
  local window = tonumber(ARGV[2 * i])
  if charge == 1 then
    counts[i] = redis.call('INCRBY', key, 1)
  end
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then
    if charge == 1 then
      redis.call('EXPIRE', key, window)
    end
    ttl = window * 1000
  end
  out[#out + 1] = counts[i]
  out[#out + 1] = ttl
end
return out
"""

# The same, and a reservation on budgets in the same atomic step. KEYS: the n rate-limit counters,
# then per budget its hash and its reservation set. ARGV: n, the n (limit, window) pairs, the
# reservation id, now and its expiry (epoch s), then per budget its limit, its keys' TTL and the
# amount reserved on it (the worst case, in the budget's unit). Expired reservations are swept
# first. A budget hash without ``spent`` stops the script before anything is charged: it returns 2
# and the budgets' numbers, to be seeded from PostgreSQL. Else 1 or 0 (all charged and reserved, or
# nothing), a count and TTL per counter, and per budget its spent and reserved amounts.
FIXED_WINDOW_HIT_AND_RESERVE = """
local n = tonumber(ARGV[1])
local a = 2 * n + 2
local rid = ARGV[a]
local now = tonumber(ARGV[a + 1])
local expires = tonumber(ARGV[a + 2])
local nb = (#KEYS - n) / 2
local missing = {2}
local spent, reserved = {}, {}
for j = 1, nb do
  local h, z = KEYS[n + 2 * j - 1], KEYS[n + 2 * j]
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', z, '-inf', now)) do
    local held = tonumber(redis.call('HGET', h, 'r:' .. id) or '0')
    redis.call('HDEL', h, 'r:' .. id)
    redis.call('HINCRBY', h, 'reserved', -held)
    redis.call('ZREM', z, id)
  end
  local numbers = redis.call('HMGET', h, 'spent', 'reserved')
  if not numbers[1] then
    missing[#missing + 1] = j
  end
  spent[j] = tonumber(numbers[1] or '0')
  reserved[j] = tonumber(numbers[2] or '0')
end
if #missing > 1 then
  return missing
end
local charge = 1
local counts = {}
for i = 1, n do
  counts[i] = tonumber(redis.call('GET', KEYS[i]) or '0') + 1
  if counts[i] > tonumber(ARGV[2 * i]) then
    charge = 0
  end
end
for j = 1, nb do
  local b = a + 3 * j
  if spent[j] + reserved[j] + tonumber(ARGV[b + 2]) > tonumber(ARGV[b]) then
    charge = 0
  end
end
local out = {charge}
for i = 1, n do
  local window = tonumber(ARGV[2 * i + 1])
  if charge == 1 then
    counts[i] = redis.call('INCRBY', KEYS[i], 1)
  end
  local ttl = redis.call('PTTL', KEYS[i])
  if ttl < 0 then
    if charge == 1 then
      redis.call('EXPIRE', KEYS[i], window)
    end
    ttl = window * 1000
  end
  out[#out + 1] = counts[i]
  out[#out + 1] = ttl
end
for j = 1, nb do
  local h, z = KEYS[n + 2 * j - 1], KEYS[n + 2 * j]
  local b = a + 3 * j
  if charge == 1 then
    local amount = tonumber(ARGV[b + 2])
    redis.call('HSET', h, 'r:' .. rid, amount)
    reserved[j] = redis.call('HINCRBY', h, 'reserved', amount)
    redis.call('ZADD', z, expires, rid)
    redis.call('EXPIRE', h, ARGV[b + 1])
    redis.call('EXPIRE', z, ARGV[b + 1])
  end
  out[#out + 1] = spent[j]
  out[#out + 1] = reserved[j]
end
return out
"""

# KEYS: per budget its hash and its reservation set; ARGV: the reservation id, then per budget the
# amount it settles to (0: a release). A reservation already swept still settles its spend.
SETTLE = """
local rid = ARGV[1]
for j = 1, #KEYS / 2 do
  local h, z = KEYS[2 * j - 1], KEYS[2 * j]
  local amount = tonumber(ARGV[j + 1])
  local held = redis.call('HGET', h, 'r:' .. rid)
  if held then
    redis.call('HDEL', h, 'r:' .. rid)
    redis.call('HINCRBY', h, 'reserved', -tonumber(held))
    redis.call('ZREM', z, rid)
  end
  if amount > 0 and redis.call('HEXISTS', h, 'spent') == 1 then
    redis.call('HINCRBY', h, 'spent', amount)
  end
end
return 1
"""

SEEDING = 2  # FIXED_WINDOW_HIT_AND_RESERVE's first value when budgets must be seeded first


@dataclass(frozen=True)
class BudgetSlot:
    """One budget's part of ``FIXED_WINDOW_HIT_AND_RESERVE``: its two keys, its limit, its keys'
    TTL in seconds and the amount to reserve on it."""

    hash_key: str
    reservations_key: str
    limit: int
    ttl_s: int
    amount: int


def hit_and_reserve_layout(
    counters: Sequence[tuple[str, int, int]],
    budgets: Sequence[BudgetSlot],
    reservation_id: str,
    now: float,
    expires: float,
) -> tuple[list[str], list[int | float | str]]:
    """KEYS and ARGV of ``FIXED_WINDOW_HIT_AND_RESERVE`` for rate-limit ``counters`` (key, limit,
    window in seconds) and ``budgets``."""
    keys = [key for key, _, _ in counters]
    args: list[int | float | str] = [len(counters)]
    args += [value for _, limit, window in counters for value in (limit, window)]
    args += [reservation_id, now, expires]
    for slot in budgets:
        keys += [slot.hash_key, slot.reservations_key]
        args += [slot.limit, slot.ttl_s, slot.amount]
    return keys, args


def budget_numbers(raw: Sequence[int], counters: int, budgets: int) -> list[tuple[int, int]]:
    """(spent, reserved) per budget from a ``FIXED_WINDOW_HIT_AND_RESERVE`` result."""
    offset = 1 + 2 * counters
    return [(int(raw[offset + 2 * j]), int(raw[offset + 2 * j + 1])) for j in range(budgets)]
