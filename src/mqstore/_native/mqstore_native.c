/*
 * mqstore native core: encode, decode and scan RocketMQ CommitLog records, and the
 * hashes and checksums the format needs. Every per-byte loop of mqstore lives here.
 *
 * CommitLog record (RocketMQ 4.9.8 "v1", all integers big-endian; BH/SH = 8 for an
 * IPv4 host, 20 for IPv6, chosen by SYSFLAG bits 0x10/0x20; full detail in
 * docs/format.md and shared/docs/rocketmq-store-format.md section 3):
 *
 *   0 TOTALSIZE i32 | 4 MAGICCODE i32 | 8 BODYCRC i32 | 12 QUEUEID i32 | 16 FLAG i32
 *  20 QUEUEOFFSET i64 | 28 PHYSICALOFFSET i64 | 36 SYSFLAG i32 | 40 BORNTIMESTAMP i64
 *  48 BORNHOST (ip, port i32) BH | STORETIMESTAMP i64 | STOREHOST SH
 *     RECONSUMETIMES i32 | PREPAREDTRANSACTIONOFFSET i64
 *     BODYLENGTH i32, BODY | TOPICLENGTH i8 (i16 for the v2 magic), TOPIC
 *     PROPERTIESLENGTH i16, PROPERTIES ("k\x01v\x02k\x01v")
 *   TOTALSIZE = 74 + BH + SH + TL + bodyLen + topicLen + propsLen  (91 + data for v1/IPv4)
 *
 * End-of-file filler: TOTALSIZE = bytes left in the file, MAGICCODE = BLANK.
 *
 * The encoder (mq_encode_record / mq_encode_batch) and the decoder (mq_scan) mirror
 * each other field by field.
 *
 * Untrusted input: mq_scan reads bytes from disk. Every length it reads is checked
 * against the record's TOTALSIZE, and TOTALSIZE against the bytes the caller says
 * are readable, before anything is read through it. Malformed input yields an error
 * code, never a read outside [buf, buf + buf_len).
 *
 * Thread safety: cffi releases the GIL around every call, so any of these functions
 * may run in several threads at once. All of them are reentrant: they keep no state
 * between calls and touch only the memory the caller passes in. mq_append only reads
 * its mq_append_ctx; the CommitLog rewrites that struct (on a file roll) only while
 * holding its append lock, the same lock every mq_append caller holds, so no call
 * sees it half-written. The only global data
 * is the CRC table, filled once by a constructor when the library is loaded (before
 * Python can call anything) and read-only afterwards. Callers must not let two
 * threads write the same destination bytes at once; mqstore's CommitLog serializes
 * writers with its append lock, and readers only look below the published write
 * position.
 */
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include "mqstore_native.h"

#ifdef MQ_HAVE_ZLIB
#include <zlib.h>
#endif

#define MESSAGE_MAGIC_CODE ((int32_t)0xDAA320A7)
#define MESSAGE_MAGIC_CODE_V2 ((int32_t)0xDAA320AB)
#define BLANK_MAGIC_CODE ((int32_t)0xCBD43194)
#define BORNHOST_V6_FLAG 0x10
#define STOREHOST_V6_FLAG 0x20
#define BLANK_RECORD_SIZE 8
#define MAX_TOPIC_BYTES_V1 127
#define MAX_PROPS_BYTES 32767

/* ---------------------------------------------------------------- byte order */

static inline void put32(char *p, int32_t v) {
    uint32_t u = __builtin_bswap32((uint32_t)v);
    memcpy(p, &u, 4);
}
static inline void put64(char *p, int64_t v) {
    uint64_t u = __builtin_bswap64((uint64_t)v);
    memcpy(p, &u, 8);
}
static inline void put16(char *p, int16_t v) {
    uint16_t u = __builtin_bswap16((uint16_t)v);
    memcpy(p, &u, 2);
}
static inline int32_t get32(const char *p) {
    uint32_t u;
    memcpy(&u, p, 4);
    return (int32_t)__builtin_bswap32(u);
}
static inline int64_t get64(const char *p) {
    uint64_t u;
    memcpy(&u, p, 8);
    return (int64_t)__builtin_bswap64(u);
}
static inline int16_t get16(const char *p) {
    uint16_t u;
    memcpy(&u, p, 2);
    return (int16_t)__builtin_bswap16(u);
}

/* ---------------------------------------------------------------- CRC-32 */

/* Standard CRC-32 (zlib polynomial), slicing-by-8; RocketMQ masks it with 0x7FFFFFFF. */
static uint32_t crc_table[8][256];

__attribute__((constructor)) static void crc_table_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (0xEDB88320u ^ (c >> 1)) : (c >> 1);
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = crc_table[0][i];
        for (int t = 1; t < 8; t++) {
            c = crc_table[0][c & 0xFF] ^ (c >> 8);
            crc_table[t][i] = c;
        }
    }
}

static uint32_t crc32_raw(const unsigned char *p, int64_t len) {
    uint32_t c = 0xFFFFFFFFu;
    while (len >= 8) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + 4, 4);
        lo ^= c; /* little-endian hosts only; see the check below */
        c = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^
            crc_table[5][(lo >> 16) & 0xFF] ^ crc_table[4][lo >> 24] ^
            crc_table[3][hi & 0xFF] ^ crc_table[2][(hi >> 8) & 0xFF] ^
            crc_table[1][(hi >> 16) & 0xFF] ^ crc_table[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len-- > 0)
        c = crc_table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "mqstore's CRC slicing assumes a little-endian host"
#endif

int32_t mq_crc32(const char *data, int64_t len) {
    if (data == NULL || len <= 0)
        return 0;
#ifdef MQ_HAVE_ZLIB
    /* zlib's braided CRC is ~2.5x faster than our slicing-by-8 on 4 KiB bodies
     * (measured: 0.6 us vs 1.7 us); used when the build found zlib.h. */
    if (len >= 64) {
        uLong c = crc32(0L, Z_NULL, 0);
        const unsigned char *p = (const unsigned char *)data;
        while (len > 0) {
            uInt n = len > (1 << 30) ? (1u << 30) : (uInt)len;
            c = crc32(c, p, n);
            p += n;
            len -= n;
        }
        return (int32_t)(c & 0x7FFFFFFFu);
    }
#endif
    return (int32_t)(crc32_raw((const unsigned char *)data, len) & 0x7FFFFFFFu);
}

/* ---------------------------------------------------------------- Java hashCode */

static uint32_t java_hash_utf8_from(uint32_t h, const char *data, int64_t len);

/*
 * Java String.hashCode over the UTF-16 code units of the string the bytes decode to.
 * Malformed UTF-8 decodes to U+FFFD per maximal ill-formed subpart (what Java's
 * decoder and Python's errors="replace" both do), so a damaged file hashes the way
 * RocketMQ would hash it.
 */
int32_t mq_java_hash_utf8(const char *data, int64_t len) {
    return (int32_t)java_hash_utf8_from(0, data, len);
}

static uint32_t java_hash_utf8_from(uint32_t h, const char *data, int64_t len) {
    const unsigned char *s = (const unsigned char *)data;
    int64_t i = 0;
    while (i < len) {
        unsigned char b0 = s[i];
        if (b0 < 0x80) {
            h = 31u * h + b0;
            i++;
            continue;
        }
        int need;
        unsigned char lo = 0x80, hi = 0xBF;
        uint32_t cp;
        if (b0 >= 0xC2 && b0 <= 0xDF) {
            need = 1;
            cp = b0 & 0x1F;
        } else if (b0 >= 0xE0 && b0 <= 0xEF) {
            need = 2;
            cp = b0 & 0x0F;
            if (b0 == 0xE0)
                lo = 0xA0;
            else if (b0 == 0xED)
                hi = 0x9F;
        } else if (b0 >= 0xF0 && b0 <= 0xF4) {
            need = 3;
            cp = b0 & 0x07;
            if (b0 == 0xF0)
                lo = 0x90;
            else if (b0 == 0xF4)
                hi = 0x8F;
        } else {
            h = 31u * h + 0xFFFDu;
            i++;
            continue;
        }
        int64_t j = 1;
        int ok = 1;
        for (; j <= need; j++) {
            if (i + j >= len) {
                ok = 0;
                break;
            }
            unsigned char b = s[i + j];
            if (j == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) {
                ok = 0;
                break;
            }
            cp = (cp << 6) | (b & 0x3F);
        }
        if (!ok) {
            h = 31u * h + 0xFFFDu;
            i += j; /* the maximal subpart: lead byte plus the valid continuations */
            continue;
        }
        if (cp >= 0x10000) {
            cp -= 0x10000;
            h = 31u * h + (0xD800u + (cp >> 10));
            h = 31u * h + (0xDC00u + (cp & 0x3FF));
        } else {
            h = 31u * h + cp;
        }
        i += need + 1;
    }
    return h;
}

int32_t mq_java_hash_utf16le(const char *data, int64_t nbytes) {
    const unsigned char *s = (const unsigned char *)data;
    uint32_t h = 0;
    for (int64_t i = 0; i + 1 < nbytes; i += 2)
        h = 31u * h + (uint32_t)(s[i] | (s[i + 1] << 8));
    return (int32_t)h;
}

/* ---------------------------------------------------------------- encoding */

int64_t mq_record_size(int32_t body_len, int32_t topic_len, int32_t props_len,
                       int32_t born_host_len, int32_t store_host_len) {
    return 74 + (int64_t)born_host_len + store_host_len + 1 + (int64_t)body_len +
           topic_len + props_len;
}

static int host_len_ok(int32_t n) { return n == 8 || n == 20; }

/* Writes one v1 record at dst (which has room for it); returns its size. */
static int64_t write_record(char *dst, int64_t total, int64_t physical_offset,
                            const char *body, int32_t body_len, const char *topic,
                            int32_t topic_len, const char *props, int32_t props_len,
                            int32_t queue_id, int32_t flag, int64_t queue_offset,
                            int32_t sys_flag, int64_t born_timestamp,
                            const char *born_host, int32_t born_host_len,
                            int64_t store_timestamp, const char *store_host,
                            int32_t store_host_len, int32_t reconsume_times,
                            int64_t prepared_offset) {
    sys_flag &= ~(BORNHOST_V6_FLAG | STOREHOST_V6_FLAG);
    if (born_host_len == 20)
        sys_flag |= BORNHOST_V6_FLAG;
    if (store_host_len == 20)
        sys_flag |= STOREHOST_V6_FLAG;
    char *p = dst;
    put32(p, (int32_t)total);
    put32(p + 4, MESSAGE_MAGIC_CODE);
    put32(p + 8, mq_crc32(body, body_len));
    put32(p + 12, queue_id);
    put32(p + 16, flag);
    put64(p + 20, queue_offset);
    put64(p + 28, physical_offset);
    put32(p + 36, sys_flag);
    put64(p + 40, born_timestamp);
    p += 48;
    memcpy(p, born_host, (size_t)born_host_len);
    p += born_host_len;
    put64(p, store_timestamp);
    p += 8;
    memcpy(p, store_host, (size_t)store_host_len);
    p += store_host_len;
    put32(p, reconsume_times);
    put64(p + 4, prepared_offset);
    put32(p + 12, body_len);
    p += 16;
    if (body_len > 0)
        memcpy(p, body, (size_t)body_len);
    p += body_len;
    *p++ = (char)(int8_t)topic_len;
    memcpy(p, topic, (size_t)topic_len);
    p += topic_len;
    put16(p, (int16_t)props_len);
    p += 2;
    if (props_len > 0)
        memcpy(p, props, (size_t)props_len);
    return total;
}

/*
 * Encodes one record at file_base + pos. Returns the record size; MQ_ENC_NOSPACE when
 * size + 8 > file_size - pos (RocketMQ's rule: room must remain for a blank record;
 * nothing is written, the caller writes the blank and rolls); MQ_ENC_TOOBIG when the
 * record would not fit even in an empty file; MQ_ENC_BADARG for an impossible length.
 */
int64_t mq_encode_record(char *file_base, int64_t pos, int64_t file_size,
                         int64_t physical_offset,
                         const char *body, int32_t body_len,
                         const char *topic, int32_t topic_len,
                         const char *props, int32_t props_len,
                         int32_t queue_id, int32_t flag, int64_t queue_offset,
                         int32_t sys_flag, int64_t born_timestamp,
                         const char *born_host, int32_t born_host_len,
                         int64_t store_timestamp,
                         const char *store_host, int32_t store_host_len,
                         int32_t reconsume_times, int64_t prepared_offset) {
    if (body_len < 0 || topic_len < 0 || topic_len > MAX_TOPIC_BYTES_V1 || props_len < 0 ||
        props_len > MAX_PROPS_BYTES || !host_len_ok(born_host_len) ||
        !host_len_ok(store_host_len) || pos < 0 || pos > file_size)
        return MQ_ENC_BADARG;
    int64_t total = mq_record_size(body_len, topic_len, props_len, born_host_len,
                                   store_host_len);
    if (total + BLANK_RECORD_SIZE > file_size)
        return MQ_ENC_TOOBIG;
    if (total + BLANK_RECORD_SIZE > file_size - pos)
        return MQ_ENC_NOSPACE;
    return write_record(file_base + pos, total, physical_offset, body, body_len, topic,
                        topic_len, props, props_len, queue_id, flag, queue_offset,
                        sys_flag, born_timestamp, born_host, born_host_len,
                        store_timestamp, store_host, store_host_len, reconsume_times,
                        prepared_offset);
}

/*
 * mq_encode_record with the file and the default hosts taken from `ctx`: the
 * CommitLog's hot path (fewer arguments to convert per call). `ctx` is only read.
 */
int64_t mq_append(const mq_append_ctx *ctx, int64_t pos,
                  const char *body, int32_t body_len,
                  const char *topic, int32_t topic_len,
                  const char *props, int32_t props_len,
                  int32_t queue_id, int32_t flag, int64_t queue_offset,
                  int32_t sys_flag, int64_t born_timestamp, int64_t store_timestamp,
                  int32_t reconsume_times, int64_t prepared_offset) {
    return mq_encode_record(ctx->base, pos, ctx->file_size, ctx->file_from_offset + pos, body,
                            body_len, topic, topic_len, props, props_len, queue_id, flag,
                            queue_offset, sys_flag, born_timestamp, ctx->born_host,
                            ctx->born_host_len, store_timestamp, ctx->store_host,
                            ctx->store_host_len, reconsume_times, prepared_offset);
}

/*
 * Encodes `count` records of one topic and queue, consecutive from file_base + pos,
 * the way RocketMQ stores a batch: consecutive queue offsets, one store timestamp,
 * prepared offset 0. Bodies and properties are concatenated in `bodies` / `props`
 * with their lengths in body_lens / props_lens. Writes each record's size to
 * out_sizes. All or nothing: returns the total size, or a negative MQ_ENC_* code with
 * nothing written (MQ_ENC_NOSPACE when the whole batch plus a blank does not fit).
 */
int64_t mq_encode_batch(char *file_base, int64_t pos, int64_t file_size,
                        int64_t physical_offset, int32_t count,
                        const char *bodies, const int32_t *body_lens,
                        const char *props, const int32_t *props_lens,
                        const int32_t *flags,
                        const char *topic, int32_t topic_len,
                        int32_t queue_id, int64_t first_queue_offset,
                        int32_t sys_flag, int64_t born_timestamp,
                        const char *born_host, int32_t born_host_len,
                        int64_t store_timestamp,
                        const char *store_host, int32_t store_host_len,
                        int32_t reconsume_times, int32_t *out_sizes) {
    if (count <= 0 || topic_len < 0 || topic_len > MAX_TOPIC_BYTES_V1 ||
        !host_len_ok(born_host_len) || !host_len_ok(store_host_len) || pos < 0 ||
        pos > file_size)
        return MQ_ENC_BADARG;
    int64_t total = 0;
    for (int32_t i = 0; i < count; i++) {
        if (body_lens[i] < 0 || props_lens[i] < 0 || props_lens[i] > MAX_PROPS_BYTES)
            return MQ_ENC_BADARG;
        int64_t size = mq_record_size(body_lens[i], topic_len, props_lens[i],
                                      born_host_len, store_host_len);
        out_sizes[i] = (int32_t)size;
        total += size;
        if (total + BLANK_RECORD_SIZE > file_size)
            return MQ_ENC_TOOBIG;
    }
    if (total + BLANK_RECORD_SIZE > file_size - pos)
        return MQ_ENC_NOSPACE;
    const char *body = bodies, *prop = props;
    int64_t at = pos;
    for (int32_t i = 0; i < count; i++) {
        write_record(file_base + at, out_sizes[i], physical_offset + (at - pos), body,
                     body_lens[i], topic, topic_len, prop, props_lens[i], queue_id,
                     flags[i], first_queue_offset + i, sys_flag, born_timestamp,
                     born_host, born_host_len, store_timestamp, store_host,
                     store_host_len, reconsume_times, 0);
        body += body_lens[i];
        prop += props_lens[i];
        at += out_sizes[i];
    }
    return total;
}

/* Closes a file with RocketMQ's blank record: TOTALSIZE = bytes left, BLANK magic. */
int32_t mq_write_blank(char *file_base, int64_t pos, int64_t file_size) {
    int64_t left = file_size - pos;
    if (pos < 0 || left < BLANK_RECORD_SIZE || left > INT32_MAX)
        return MQ_ENC_BADARG;
    put32(file_base + pos, (int32_t)left);
    put32(file_base + pos + 4, BLANK_MAGIC_CODE);
    return (int32_t)left;
}

/* ---------------------------------------------------------------- decoding */

/*
 * Finds property `key` in a RocketMQ properties string the way MessageDecoder parses
 * it: segments split on \x02; a segment counts when it has >= 3 bytes and its first
 * \x01 is neither its first nor its last byte; a later duplicate wins.
 */
static int find_property(const char *props, int32_t len, const char *key, int32_t key_len,
                         int64_t *value_off, int64_t *value_len) {
    int found = 0;
    int32_t start = 0;
    while (start <= len) {
        const char *seg = props + start;
        const char *end = memchr(seg, 2, (size_t)(len - start));
        int32_t seg_len = end ? (int32_t)(end - seg) : len - start;
        if (seg_len >= 3) {
            const char *sep = memchr(seg, 1, (size_t)seg_len);
            if (sep && sep > seg && sep < seg + seg_len - 1) {
                int32_t klen = (int32_t)(sep - seg);
                if (klen == key_len && memcmp(seg, key, (size_t)key_len) == 0) {
                    *value_off = (sep + 1) - props;
                    *value_len = seg_len - klen - 1;
                    found = 1;
                }
            }
        }
        start += seg_len + 1;
    }
    return found;
}

/*
 * Validates one record at buf[pos]; on success fills `f` (MQ_FIELDS slots, offsets
 * relative to buf) and returns 0, else returns an MQ_STOP_* / MQ_ERR_* code.
 */
static int decode_one(const char *buf, int64_t buf_len, int64_t pos, int32_t flags,
                      int64_t *f) {
    int64_t rem = buf_len - pos;
    if (rem == 0)
        return MQ_STOP_END;
    if (rem < 8) {
        /* Too short for a header: zeros mean end of data, anything else is torn. */
        for (int64_t i = 0; i < rem; i++)
            if (buf[pos + i] != 0)
                return MQ_ERR_TRUNCATED;
        return MQ_STOP_ZERO;
    }
    const char *r = buf + pos;
    int32_t total = get32(r);
    int32_t magic = get32(r + 4);
    if (magic == BLANK_MAGIC_CODE)
        return MQ_STOP_BLANK;
    if (total == 0 && magic == 0)
        return MQ_STOP_ZERO;
    if (magic != MESSAGE_MAGIC_CODE && magic != MESSAGE_MAGIC_CODE_V2)
        return MQ_ERR_MAGIC;
    int topic_len_bytes = magic == MESSAGE_MAGIC_CODE ? 1 : 2;
    if (total < 91)
        return MQ_ERR_TOTAL_SIZE;
    if (total > rem)
        return MQ_ERR_TRUNCATED;
    int32_t sys_flag = get32(r + 36);
    int32_t bh = (sys_flag & BORNHOST_V6_FLAG) ? 20 : 8;
    int32_t sh = (sys_flag & STOREHOST_V6_FLAG) ? 20 : 8;
    int64_t at = 72 + bh + sh; /* first body byte */
    if (at + topic_len_bytes + 2 > total)
        return MQ_ERR_FIELD_LENGTH;
    int32_t body_len = get32(r + at - 4);
    if (body_len < 0 || body_len > total - at - topic_len_bytes - 2)
        return MQ_ERR_FIELD_LENGTH;
    int64_t body_off = at;
    at += body_len;
    int32_t topic_len = topic_len_bytes == 1 ? (int32_t)(int8_t)r[at] : (int32_t)get16(r + at);
    at += topic_len_bytes;
    if (topic_len < 0 || topic_len > total - at - 2)
        return MQ_ERR_FIELD_LENGTH;
    int64_t topic_off = at;
    at += topic_len;
    int32_t props_len = get16(r + at);
    at += 2;
    if (props_len < 0 || props_len > total - at)
        return MQ_ERR_FIELD_LENGTH;
    int64_t props_off = at;
    at += props_len;
    if (at != total)
        return MQ_ERR_SIZE_MISMATCH;
    int32_t body_crc = get32(r + 8);
    if ((flags & MQ_SCAN_CHECK_CRC) && body_len > 0 && mq_crc32(r + body_off, body_len) != body_crc)
        return MQ_ERR_CRC;
    /* A record torn after its length fields were written ends in zeros that run on
     * past it (BODYCRC does not cover topic and properties). So, with the CRC check:
     * topic or properties text ending in NUL, followed by nothing or by zeros, is a
     * torn record. mqstore never writes such text; a RocketMQ record whose property
     * ends in NUL is still accepted when a record follows it. */
    if ((flags & MQ_SCAN_CHECK_CRC) &&
        ((props_len > 0 && r[props_off + props_len - 1] == 0) ||
         (topic_len > 0 && r[topic_off + topic_len - 1] == 0))) {
        int64_t after = rem - total;
        int zeros_follow = 1;
        for (int64_t i = 0; i < after && i < 8; i++)
            if (r[total + i] != 0) {
                zeros_follow = 0;
                break;
            }
        if (zeros_follow)
            return MQ_ERR_TORN;
    }

    f[MQ_F_POS] = pos;
    f[MQ_F_TOTAL_SIZE] = total;
    f[MQ_F_MAGIC] = magic;
    f[MQ_F_BODY_CRC] = body_crc;
    f[MQ_F_QUEUE_ID] = get32(r + 12);
    f[MQ_F_FLAG] = get32(r + 16);
    f[MQ_F_QUEUE_OFFSET] = get64(r + 20);
    f[MQ_F_PHYSICAL_OFFSET] = get64(r + 28);
    f[MQ_F_SYS_FLAG] = sys_flag;
    f[MQ_F_BORN_TIMESTAMP] = get64(r + 40);
    f[MQ_F_BORN_HOST_OFF] = pos + 48;
    f[MQ_F_BORN_HOST_LEN] = bh;
    f[MQ_F_STORE_TIMESTAMP] = get64(r + 48 + bh);
    f[MQ_F_STORE_HOST_OFF] = pos + 56 + bh;
    f[MQ_F_STORE_HOST_LEN] = sh;
    f[MQ_F_RECONSUME_TIMES] = get32(r + 56 + bh + sh);
    f[MQ_F_PREPARED_OFFSET] = get64(r + 60 + bh + sh);
    f[MQ_F_BODY_OFF] = pos + body_off;
    f[MQ_F_BODY_LEN] = body_len;
    f[MQ_F_TOPIC_OFF] = pos + topic_off;
    f[MQ_F_TOPIC_LEN] = topic_len;
    f[MQ_F_PROPS_OFF] = pos + props_off;
    f[MQ_F_PROPS_LEN] = props_len;
    f[MQ_F_TAGS_CODE] = 0;
    f[MQ_F_KEYS_OFF] = -1;
    f[MQ_F_KEYS_LEN] = 0;
    f[MQ_F_UNIQ_OFF] = -1;
    f[MQ_F_UNIQ_LEN] = 0;
    if (flags & MQ_SCAN_PROPERTIES) {
        const char *p = r + props_off;
        int64_t off, len;
        if (find_property(p, props_len, "TAGS", 4, &off, &len))
            f[MQ_F_TAGS_CODE] = mq_java_hash_utf8(p + off, len);
        if (find_property(p, props_len, "KEYS", 4, &off, &len)) {
            f[MQ_F_KEYS_OFF] = pos + props_off + off;
            f[MQ_F_KEYS_LEN] = len;
        }
        if (find_property(p, props_len, "UNIQ_KEY", 8, &off, &len)) {
            f[MQ_F_UNIQ_OFF] = pos + props_off + off;
            f[MQ_F_UNIQ_LEN] = len;
        }
    }
    return 0;
}

/*
 * Walks records from buf[pos], up to max_records, writing MQ_FIELDS slots per valid
 * record to out. Returns the number of records decoded; stop[0] is the position where
 * it stopped (the start of the first record not decoded) and stop[1] says why.
 * buf_len is the number of readable bytes: nothing at or past buf + buf_len is read.
 */
int32_t mq_scan(const char *buf, int64_t buf_len, int64_t pos, int32_t max_records,
                int32_t flags, int64_t *out, int64_t *stop) {
    int32_t n = 0;
    int reason = MQ_STOP_LIMIT;
    if (buf == NULL || pos < 0 || buf_len < 0 || pos > buf_len) {
        stop[0] = pos;
        stop[1] = MQ_ERR_TRUNCATED;
        return 0;
    }
    while (n < max_records) {
        reason = decode_one(buf, buf_len, pos, flags, out + (int64_t)n * MQ_FIELDS);
        if (reason != 0)
            break;
        pos += out[(int64_t)n * MQ_FIELDS + MQ_F_TOTAL_SIZE];
        n++;
        reason = MQ_STOP_LIMIT;
    }
    stop[0] = pos;
    stop[1] = reason;
    return n;
}

/*
 * Decodes the records at the given positions (ConsumeQueue units point at records
 * scattered through a CommitLog file): out gets MQ_FIELDS slots per position and
 * reasons[i] is 0 or the MQ_STOP_* / MQ_ERR_* code of position i. Returns how many
 * decoded. A position at or past buf_len fails with MQ_ERR_TRUNCATED.
 */
int32_t mq_decode_many(const char *buf, int64_t buf_len, const int64_t *positions,
                       int32_t count, int32_t flags, int64_t *out, int64_t *reasons) {
    int32_t ok = 0;
    for (int32_t i = 0; i < count; i++) {
        int64_t pos = positions[i];
        int64_t *f = out + (int64_t)i * MQ_FIELDS;
        if (pos < 0 || pos >= buf_len) {
            reasons[i] = MQ_ERR_TRUNCATED;
            continue;
        }
        reasons[i] = decode_one(buf, buf_len, pos, flags, f);
        if (reasons[i] == 0)
            ok++;
    }
    return ok;
}

/* ---------------------------------------------------------------- get() */

#define CQ_UNIT_BYTES 20
#define CQ_BLANK_UNIT_SIZE 0x7FFFFFFF

/*
 * RocketMQ's getMessage loop over ConsumeQueue units: takes `units` (n_units raw
 * 20-byte units, read from disk) in order and picks those get() returns, up to
 * `budget` picks, stopping before the unit that would take the picked bytes past
 * `byte_limit` (unless nothing is picked yet: io[MQ_PICK_HAVE] = 0 and no pick made
 * in this call). Skipped, in this order: a tag code whose low 32 bits are not among
 * `codes` (n_codes < 0: no tag filter), a pre-fill unit (offset 0, size BLANK), a
 * unit below cl_min (its record was deleted), and a unit pointing outside
 * [0, cl_max) (damaged: its index goes to `damaged`, which has room for n_units).
 * picked gets three int64 per pick: CommitLog offset, size, index in `units`.
 * io: in: [MQ_PICK_BYTES] bytes picked before, [MQ_PICK_HAVE] messages held before;
 * out: bytes after, [MQ_PICK_SCANNED] units consumed, [MQ_PICK_FULL] 1 when the byte
 * limit stopped it, [MQ_PICK_MISS] the last skip reason (MQ_MISS_*),
 * [MQ_PICK_DAMAGED] the number of damaged indices, and [MQ_PICK_UNORDERED] 1 when a
 * pick's offset is below the one before it (a damaged queue: units are otherwise in
 * CommitLog order). Returns the number picked.
 * Thread-safe: touches only its arguments.
 */
int32_t mq_pick_units(const char *units, int32_t n_units, const int32_t *codes,
                      int32_t n_codes, int64_t cl_min, int64_t cl_max, int64_t byte_limit,
                      int32_t budget, int64_t *io, int64_t *picked, int64_t *damaged) {
    int64_t bytes = io[MQ_PICK_BYTES];
    int have = io[MQ_PICK_HAVE] != 0;
    int32_t n = 0, scanned = 0, n_damaged = 0;
    int64_t miss = MQ_MISS_NONE, full = 0, unordered = 0;
    while (scanned < n_units && n < budget) {
        const char *u = units + (int64_t)scanned * CQ_UNIT_BYTES;
        int64_t offset = get64(u);
        int32_t size = get32(u + 8);
        int64_t tag_code = get64(u + 12);
        if ((have || n > 0) && bytes + size > byte_limit) {
            full = 1;
            break;
        }
        scanned++;
        if (n_codes >= 0) {
            int32_t low = (int32_t)(uint32_t)(uint64_t)tag_code;
            int found = 0;
            for (int32_t c = 0; c < n_codes; c++)
                if (codes[c] == low) {
                    found = 1;
                    break;
                }
            if (!found) {
                miss = MQ_MISS_NO_MATCH;
                continue;
            }
        }
        if (size == CQ_BLANK_UNIT_SIZE && offset == 0)
            continue;
        if (offset < cl_min) {
            miss = MQ_MISS_REMOVED;
            continue;
        }
        if (offset < 0 || size <= 0 || offset > cl_max - size) {
            damaged[n_damaged++] = scanned - 1;
            continue;
        }
        if (n > 0 && offset < picked[3 * (n - 1)])
            unordered = 1;
        picked[3 * n] = offset;
        picked[3 * n + 1] = size;
        picked[3 * n + 2] = scanned - 1;
        bytes += size;
        n++;
    }
    io[MQ_PICK_BYTES] = bytes;
    io[MQ_PICK_SCANNED] = scanned;
    io[MQ_PICK_FULL] = full;
    io[MQ_PICK_MISS] = miss;
    io[MQ_PICK_DAMAGED] = n_damaged;
    io[MQ_PICK_UNORDERED] = unordered;
    return n;
}

/*
 * Checks the records that `count` picks (mq_pick_units' triples) point at inside one
 * CommitLog file: `buf` is its mapping, `buf_len` its readable bytes, `file_from` the
 * CommitLog offset of buf[0]. For pick i, reasons[i] is 0, an MQ_STOP_* / MQ_ERR_*
 * code, MQ_ERR_UNIT_SIZE when the record's TOTALSIZE is not the unit's size, or
 * MQ_LOC_UNUSUAL for a sound record whose QUEUEID is not `queue_id` or whose
 * PHYSICALOFFSET is not the unit's offset. For a sound record (reason 0 or UNUSUAL),
 * out gets MQ_LOC_FIELDS int64: the body's offset inside the record, the body length
 * and the record's QUEUEOFFSET. Returns the number of sound records.
 * Thread-safe: touches only its arguments.
 */
int32_t mq_locate_many(const char *buf, int64_t buf_len, int64_t file_from,
                       int32_t queue_id, const int64_t *picked, int32_t count,
                       int64_t *out, int64_t *reasons) {
    int64_t f[MQ_FIELDS];
    int32_t ok = 0;
    for (int32_t i = 0; i < count; i++) {
        int64_t pos = picked[3 * i] - file_from;
        int64_t *o = out + (int64_t)i * MQ_LOC_FIELDS;
        if (pos < 0 || pos >= buf_len) {
            reasons[i] = MQ_ERR_TRUNCATED;
            continue;
        }
        int reason = decode_one(buf, buf_len, pos, 0, f);
        if (reason == 0 && f[MQ_F_TOTAL_SIZE] != picked[3 * i + 1])
            reason = MQ_ERR_UNIT_SIZE;
        if (reason == 0 && (f[MQ_F_QUEUE_ID] != queue_id ||
                            f[MQ_F_PHYSICAL_OFFSET] != picked[3 * i]))
            reason = MQ_LOC_UNUSUAL;
        reasons[i] = reason;
        if (reason > 0)
            continue;
        o[MQ_LOC_BODY_OFF] = f[MQ_F_BODY_OFF] - pos;
        o[MQ_LOC_BODY_LEN] = f[MQ_F_BODY_LEN];
        o[MQ_LOC_QUEUE_OFFSET] = f[MQ_F_QUEUE_OFFSET];
        ok++;
    }
    return ok;
}

/* ---------------------------------------------------------------- JSON lines */

/* A byte JSON text carries between quotes as it is: printable ASCII but " and \. */
static inline int json_plain(unsigned char c) {
    return c >= 0x20 && c <= 0x7e && c != '"' && c != '\\';
}

static int all_plain(const char *p, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!json_plain((unsigned char)p[i]))
            return 0;
    return 1;
}

/* RocketMQ's decoder reads it as written: name\x01value segments joined by \x02, names
 * and values non-empty and plain (jsonl.py's _PLAIN_PROPS). */
static int plain_props(const char *p, int64_t n) {
    int64_t i = 0;
    for (;;) {
        int64_t start = i;
        while (i < n && json_plain((unsigned char)p[i]))
            i++;
        if (i == start || i == n || p[i] != 1)
            return 0;
        start = ++i;
        while (i < n && json_plain((unsigned char)p[i]))
            i++;
        if (i == start)
            return 0;
        if (i == n)
            return 1;
        if (p[i] != 2)
            return 0;
        i++;
    }
}

/* Length of the valid UTF-8 sequence at p (Python's strict decoder: no overlongs, no
 * surrogates, nothing past U+10FFFF), or 0 when it is not one. */
static int utf8_seq(const unsigned char *p, int64_t n) {
    unsigned char c = p[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return n >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
            return 0;
        if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] >= 0xA0))
            return 0;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            return 0;
        if ((c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] >= 0x90))
            return 0;
        return 4;
    }
    return 0;
}

static int valid_utf8(const unsigned char *p, int64_t n) {
    int64_t i = 0;
    while (i < n) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        int k = utf8_seq(p + i, n - i);
        if (!k)
            return 0;
        i += k;
    }
    return 1;
}

static const char HEX_LOWER[] = "0123456789abcdef";
static const char HEX_UPPER[] = "0123456789ABCDEF";

/* A JSON string of valid UTF-8 text, quoted as Python's json.encoder.encode_basestring
 * (ensure_ascii=False) quotes it. Writes at most 6 * n + 2 bytes. */
static char *json_string(char *o, const unsigned char *p, int64_t n) {
    *o++ = '"';
    for (int64_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *o++ = (char)c;
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        default:
            *o++ = 'u'; *o++ = '0'; *o++ = '0';
            *o++ = HEX_LOWER[c >> 4]; *o++ = HEX_LOWER[c & 15];
        }
    }
    *o++ = '"';
    return o;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *base64_string(char *o, const unsigned char *p, int64_t n) {
    *o++ = '"';
    int64_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = B64[v >> 18]; *o++ = B64[(v >> 12) & 63];
        *o++ = B64[(v >> 6) & 63]; *o++ = B64[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        *o++ = B64[v >> 18]; *o++ = B64[(v >> 12) & 63]; *o++ = '='; *o++ = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        *o++ = B64[v >> 18]; *o++ = B64[(v >> 12) & 63]; *o++ = B64[(v >> 6) & 63];
        *o++ = '=';
    }
    *o++ = '"';
    return o;
}

static char *put_lit(char *o, const char *s) {
    size_t n = strlen(s);
    memcpy(o, s, n);
    return o + n;
}

static char *put_i64(char *o, int64_t v) {
    char tmp[24];
    int n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *o++ = '-';
    while (n)
        *o++ = tmp[--n];
    return o;
}

static char *put_quoted_raw(char *o, const char *p, int64_t n) {
    *o++ = '"';
    memcpy(o, p, (size_t)n);
    o += n;
    *o++ = '"';
    return o;
}

/* "a.b.c.d:port" of an 8-byte IPv4 host. */
static char *put_ipv4_host(char *o, const unsigned char *h) {
    *o++ = '"';
    for (int k = 0; k < 4; k++) {
        if (k)
            *o++ = '.';
        o = put_i64(o, h[k]);
    }
    *o++ = ':';
    o = put_i64(o, get32((const char *)h + 4));
    *o++ = '"';
    return o;
}

/* JSON members that are numbers, in the order cat writes them: ",\"name\":" then the
 * field's value. */
typedef struct {
    const char *key;
    int field;
} json_number;

static const json_number JSON_HEAD[] = {
    {",\"queueId\":", MQ_F_QUEUE_ID},
    {",\"queueOffset\":", MQ_F_QUEUE_OFFSET},
    {",\"commitLogOffset\":", MQ_F_PHYSICAL_OFFSET},
    {",\"storeSize\":", MQ_F_TOTAL_SIZE},
};
static const json_number JSON_TIMES[] = {
    {",\"bornTimestamp\":", MQ_F_BORN_TIMESTAMP},
    {",\"storeTimestamp\":", MQ_F_STORE_TIMESTAMP},
};
static const json_number JSON_TAIL[] = {
    {",\"sysFlag\":", MQ_F_SYS_FLAG},
    {",\"reconsumeTimes\":", MQ_F_RECONSUME_TIMES},
    {",\"flag\":", MQ_F_FLAG},
    {",\"bodyCRC\":", MQ_F_BODY_CRC},
    {",\"preparedTransactionOffset\":", MQ_F_PREPARED_OFFSET},
    {",\"magicCode\":", MQ_F_MAGIC},
    {",\"bodyLength\":", MQ_F_BODY_LEN},
};

static char *put_numbers(char *o, const int64_t *f, const json_number *members, size_t n) {
    for (size_t k = 0; k < n; k++) {
        o = put_lit(o, members[k].key);
        o = put_i64(o, f[members[k].field]);
    }
    return o;
}

/* The value of the last `name` segment of plain properties, or NULL. */
static const char *plain_prop(const char *p, int64_t n, const char *name, int64_t name_len,
                              int64_t *len) {
    const char *found = NULL;
    int64_t i = 0;
    while (i < n) {
        int64_t end = i;
        while (end < n && p[end] != 2)
            end++;
        if (end - i > name_len && memcmp(p + i, name, (size_t)name_len) == 0 &&
            p[i + name_len] == 1) {
            found = p + i + name_len + 1;
            *len = end - i - name_len - 1;
        }
        i = end + 1;
    }
    return found;
}

static int span_ok(int64_t off, int64_t len, int64_t buf_len) {
    return off >= 0 && len >= 0 && off <= buf_len && len <= buf_len - off;
}

/* Every range mq_json_lines reads of one record lies inside the buffer, and the keys
 * and uniq key inside the properties (the output bound counts them there). */
static int json_span_ok(const int64_t *f, int64_t base, int64_t buf_len) {
    int64_t props = f[MQ_F_PROPS_OFF] - base, props_len = f[MQ_F_PROPS_LEN];
    return span_ok(f[MQ_F_TOPIC_OFF] - base, f[MQ_F_TOPIC_LEN], buf_len) &&
           span_ok(props, props_len, buf_len) &&
           span_ok(f[MQ_F_BODY_OFF] - base, f[MQ_F_BODY_LEN], buf_len) &&
           span_ok(f[MQ_F_BORN_HOST_OFF] - base, 8, buf_len) &&
           span_ok(f[MQ_F_STORE_HOST_OFF] - base, 8, buf_len) &&
           (f[MQ_F_KEYS_OFF] < 0 ||
            (f[MQ_F_KEYS_OFF] - base >= props &&
             span_ok(f[MQ_F_KEYS_OFF] - base - props, f[MQ_F_KEYS_LEN], props_len))) &&
           (f[MQ_F_UNIQ_OFF] < 0 ||
            (f[MQ_F_UNIQ_OFF] - base >= props &&
             span_ok(f[MQ_F_UNIQ_OFF] - base - props, f[MQ_F_UNIQ_LEN], props_len)));
}

/*
 * JSON lines for `mqstore cat --format json`, byte for byte what jsonl.JsonLines
 * writes in Python, for records [from, count) of a chunk scanned with
 * MQ_SCAN_PROPERTIES (`fields`) over `buf`, whose byte 0 is at file position `base`.
 * Filters: queue_id >= 0 keeps that queue; store time >= since; topic_len >= 0 keeps
 * that topic. At most `limit` lines (limit < 0: no limit) go to out (out_cap bytes).
 * Stops at the first record it leaves to Python: a topic or properties that are not
 * plain printable ASCII, an IPv6 host. io[MQ_JSON_NEXT] is the index of the record to
 * look at next (count when all were done), io[MQ_JSON_BYTES] the bytes written,
 * io[MQ_JSON_FULL] 1 when it stopped because out had no room for that record.
 * Returns the number of lines written. The offsets in `fields` come from mq_scan over
 * the same bytes; each is checked against buf_len anyway before it is read through (a
 * record that fails is left to Python). Thread-safe: touches only its arguments.
 */
int32_t mq_json_lines(const char *buf, int64_t buf_len, const int64_t *fields, int32_t from,
                      int32_t count, int64_t base, int32_t queue_id, int64_t since,
                      const char *topic,
                      int32_t topic_len, int32_t limit, char *out, int64_t out_cap,
                      int64_t *io) {
    char *o = out;
    int32_t lines = 0, i = from;
    io[MQ_JSON_FULL] = 0;
    for (; i < count; i++) {
        if (limit >= 0 && lines >= limit)
            break;
        const int64_t *f = fields + (int64_t)i * MQ_FIELDS;
        if (!json_span_ok(f, base, buf_len))
            break;
        const char *tp = buf + (f[MQ_F_TOPIC_OFF] - base);
        int64_t tl = f[MQ_F_TOPIC_LEN];
        if (topic_len >= 0 && (tl != topic_len || memcmp(tp, topic, (size_t)tl) != 0))
            continue;
        if (queue_id >= 0 && f[MQ_F_QUEUE_ID] != queue_id)
            continue;
        if (f[MQ_F_STORE_TIMESTAMP] < since)
            continue;
        const char *pp = buf + (f[MQ_F_PROPS_OFF] - base);
        int64_t pl = f[MQ_F_PROPS_LEN];
        const unsigned char *body = (const unsigned char *)buf + (f[MQ_F_BODY_OFF] - base);
        int64_t bl = f[MQ_F_BODY_LEN];
        if (!all_plain(tp, tl) || (pl && !plain_props(pp, pl)) ||
            f[MQ_F_BORN_HOST_LEN] != 8 || f[MQ_F_STORE_HOST_LEN] != 8)
            break; /* Python formats this one */
        /* fixed text ~460 bytes, 21 numbers of at most 20 digits, hosts 2 x 23 */
        /* properties: a separator becomes 3 bytes, and tags, keys and uniq key repeat */
        int64_t need = 1024 + tl + 6 * pl + 6 * bl;
        if (out_cap - (o - out) < need) {
            io[MQ_JSON_FULL] = 1;
            break;
        }
        const unsigned char *sh = (const unsigned char *)buf + (f[MQ_F_STORE_HOST_OFF] - base);
        const unsigned char *bh = (const unsigned char *)buf + (f[MQ_F_BORN_HOST_OFF] - base);
        o = put_lit(o, "{\"topic\":");
        o = put_quoted_raw(o, tp, tl);
        o = put_numbers(o, f, JSON_HEAD, sizeof JSON_HEAD / sizeof JSON_HEAD[0]);
        o = put_lit(o, ",\"msgId\":\"");
        for (int k = 0; k < 8; k++) {
            *o++ = HEX_UPPER[sh[k] >> 4];
            *o++ = HEX_UPPER[sh[k] & 15];
        }
        uint64_t phys = (uint64_t)f[MQ_F_PHYSICAL_OFFSET];
        for (int k = 60; k >= 0; k -= 4)
            *o++ = HEX_UPPER[(phys >> k) & 15];
        o = put_lit(o, "\",\"uniqKey\":");
        if (pl && f[MQ_F_UNIQ_OFF] >= 0)
            o = put_quoted_raw(o, buf + (f[MQ_F_UNIQ_OFF] - base), f[MQ_F_UNIQ_LEN]);
        else
            o = put_lit(o, "null");
        o = put_lit(o, ",\"tags\":");
        int64_t tag_len = 0;
        const char *tag = pl ? plain_prop(pp, pl, "TAGS", 4, &tag_len) : NULL;
        if (tag)
            o = put_quoted_raw(o, tag, tag_len);
        else
            o = put_lit(o, "null");
        o = put_lit(o, ",\"keys\":");
        if (pl && f[MQ_F_KEYS_OFF] >= 0)
            o = put_quoted_raw(o, buf + (f[MQ_F_KEYS_OFF] - base), f[MQ_F_KEYS_LEN]);
        else
            o = put_lit(o, "null");
        o = put_lit(o, ",\"properties\":");
        if (!pl) {
            o = put_lit(o, "{}");
        } else {
            o = put_lit(o, "{\"");
            for (int64_t k = 0; k < pl; k++) {
                char c = pp[k];
                if (c == 1)
                    o = put_lit(o, "\":\"");
                else if (c == 2)
                    o = put_lit(o, "\",\"");
                else
                    *o++ = c;
            }
            o = put_lit(o, "\"}");
        }
        o = put_numbers(o, f, JSON_TIMES, sizeof JSON_TIMES / sizeof JSON_TIMES[0]);
        o = put_lit(o, ",\"bornHost\":");
        o = put_ipv4_host(o, bh);
        o = put_lit(o, ",\"storeHost\":");
        o = put_ipv4_host(o, sh);
        o = put_numbers(o, f, JSON_TAIL, sizeof JSON_TAIL / sizeof JSON_TAIL[0]);
        if (valid_utf8(body, bl)) {
            o = put_lit(o, ",\"bodyEncoding\":\"utf-8\",\"body\":");
            o = json_string(o, body, bl);
        } else {
            o = put_lit(o, ",\"bodyEncoding\":\"base64\",\"body\":");
            o = base64_string(o, body, bl);
        }
        o = put_lit(o, "}\n");
        lines++;
    }
    io[MQ_JSON_NEXT] = i;
    io[MQ_JSON_BYTES] = o - out;
    return lines;
}

/* ---------------------------------------------------------------- ConsumeQueue */

#define CQ_UNIT 20
#define TRANSACTION_PREPARED_BIT 0x4

/*
 * Splits scanned records (mq_scan output over `buf`) into runs of consecutive records
 * bound for the same ConsumeQueue (same topic bytes, same queue id, and a transaction
 * type that gets a queue unit). A record that gets no unit (PREPARED or ROLLBACK)
 * is a run of its own. Writes the first record index of each run; returns the count.
 */
int32_t mq_queue_runs(const char *buf, const int64_t *fields, int32_t count,
                      int32_t *run_starts) {
    int32_t runs = 0;
    for (int32_t i = 0; i < count; i++) {
        const int64_t *f = fields + (int64_t)i * MQ_FIELDS;
        if (i > 0) {
            const int64_t *p = f - MQ_FIELDS;
            int queued = !(f[MQ_F_SYS_FLAG] & TRANSACTION_PREPARED_BIT);
            int prev_queued = !(p[MQ_F_SYS_FLAG] & TRANSACTION_PREPARED_BIT);
            if (queued && prev_queued && f[MQ_F_QUEUE_ID] == p[MQ_F_QUEUE_ID] &&
                f[MQ_F_TOPIC_LEN] == p[MQ_F_TOPIC_LEN] &&
                memcmp(buf + f[MQ_F_TOPIC_OFF], buf + p[MQ_F_TOPIC_OFF],
                       (size_t)f[MQ_F_TOPIC_LEN]) == 0)
                continue;
        }
        run_starts[runs++] = i;
    }
    return runs;
}

/*
 * Writes the units of `count` scanned records (PHYSICALOFFSET, TOTALSIZE, tag code
 * from the fields) at cq_base + pos, as many as fit before file_size; returns how
 * many were written.
 */
int32_t mq_cq_write_units(char *cq_base, int64_t pos, int64_t file_size,
                          const int64_t *fields, int32_t count) {
    if (pos < 0 || pos % CQ_UNIT)
        return -1;
    int64_t room = (file_size - pos) / CQ_UNIT;
    int32_t n = count < room ? count : (int32_t)room;
    char *p = cq_base + pos;
    for (int32_t i = 0; i < n; i++, p += CQ_UNIT) {
        const int64_t *f = fields + (int64_t)i * MQ_FIELDS;
        put64(p, f[MQ_F_PHYSICAL_OFFSET]);
        put32(p + 8, (int32_t)f[MQ_F_TOTAL_SIZE]);
        put64(p + 12, f[MQ_F_TAGS_CODE]);
    }
    return n;
}

/* RocketMQ's pre-fill units (CL offset 0, size INT32_MAX, tag 0) over [pos, end). */
int32_t mq_cq_write_blank_units(char *cq_base, int64_t pos, int64_t end) {
    int32_t n = 0;
    for (; pos + CQ_UNIT <= end; pos += CQ_UNIT, n++) {
        put64(cq_base + pos, 0);
        put32(cq_base + pos + 8, INT32_MAX);
        put64(cq_base + pos + 12, 0);
    }
    return n;
}

/*
 * The end of the valid units in [from, to): the first unit with a negative CL offset
 * or a size <= 0 ends them (RocketMQ's ConsumeQueue recovery), and so does the first
 * unit whose CL offset is >= cl_limit (truncation to a recovered CommitLog end).
 */
int64_t mq_cq_valid_end(const char *cq_base, int64_t from, int64_t to, int64_t cl_limit) {
    int64_t pos = from - from % CQ_UNIT;
    for (; pos + CQ_UNIT <= to; pos += CQ_UNIT) {
        int64_t offset = get64(cq_base + pos);
        int32_t size = get32(cq_base + pos + 8);
        if (offset < 0 || size <= 0 || offset >= cl_limit)
            break;
    }
    return pos;
}

/* ---------------------------------------------------------------- IndexFile */

#define INDEX_HEADER 40

static uint32_t java_hash_utf8_from(uint32_t h, const char *data, int64_t len);

/* Java hash of topic + "#" + key, where topic and key are UTF-8. */
int32_t mq_java_hash_key(const char *topic, int32_t topic_len, const char *key,
                         int32_t key_len) {
    uint32_t h = java_hash_utf8_from(0, topic, topic_len);
    h = 31u * h + '#';
    return (int32_t)java_hash_utf8_from(h, key, key_len);
}

/* Inserts one entry (RocketMQ IndexFile.putKey); 0 when the file is full. */
static int index_put(char *base, int32_t slot_num, int32_t index_num, int32_t key_hash_raw,
                     int64_t phy_offset, int64_t store_ts) {
    int32_t index_count = get32(base + 36);
    if (index_count <= 0)
        index_count = 1;
    if (index_count >= index_num)
        return 0;
    int32_t key_hash = key_hash_raw == INT32_MIN ? 0 : (key_hash_raw < 0 ? -key_hash_raw : key_hash_raw);
    int32_t slot = key_hash % slot_num;
    char *slot_p = base + INDEX_HEADER + (int64_t)slot * 4;
    int32_t slot_value = get32(slot_p);
    if (slot_value <= 0 || slot_value > index_count)
        slot_value = 0;
    int64_t begin_ts = get64(base);
    int64_t diff = 0;
    if (begin_ts > 0) {
        diff = (store_ts - begin_ts) / 1000;
        if (diff < 0)
            diff = 0;
        if (diff > INT32_MAX)
            diff = INT32_MAX;
    }
    char *entry = base + INDEX_HEADER + (int64_t)slot_num * 4 + (int64_t)index_count * 20;
    put32(entry, key_hash);
    put64(entry + 4, phy_offset);
    put32(entry + 12, (int32_t)diff);
    put32(entry + 16, slot_value);
    put32(slot_p, index_count);
    if (index_count <= 1) {
        put64(base + 16, phy_offset);
        put64(base, store_ts);
    }
    if (slot_value == 0)
        put32(base + 32, get32(base + 32) + 1);
    put32(base + 36, index_count + 1);
    put64(base + 24, phy_offset);
    put64(base + 8, store_ts);
    return 1;
}

/*
 * Indexes scanned records (mq_scan with MQ_SCAN_PROPERTIES) into the index file at
 * index_base, the way RocketMQ's IndexService.buildIndex does: per record, unless it
 * is a ROLLBACK or lies below the file's endPhyOffset, the key topic#UNIQ_KEY and then
 * topic#k for every space-separated k in KEYS. resume[0] / resume[1] are the record
 * and key to start at (0/0 for a fresh call); when the file fills up, they are set to
 * where to continue in the next file and 0 is returned. Returns 1 when all records
 * were indexed. Key numbering: 0 = UNIQ_KEY, 1.. = KEYS tokens in order.
 */
int32_t mq_index_add(char *index_base, int32_t slot_num, int32_t index_num,
                     const char *buf, const int64_t *fields, int32_t count,
                     int32_t *resume) {
    if (slot_num <= 0 || index_num <= 1)
        return -1;
    for (int32_t i = resume[0]; i < count; i++) {
        const int64_t *f = fields + (int64_t)i * MQ_FIELDS;
        int32_t first_key = resume[1];
        resume[1] = 0;
        if ((f[MQ_F_SYS_FLAG] & 0xC) == 0xC)
            continue; /* ROLLBACK */
        int64_t phy = f[MQ_F_PHYSICAL_OFFSET];
        if (first_key == 0 && phy < get64(index_base + 24))
            continue; /* indexed already */
        const char *topic = buf + f[MQ_F_TOPIC_OFF];
        int32_t topic_len = (int32_t)f[MQ_F_TOPIC_LEN];
        int64_t ts = f[MQ_F_STORE_TIMESTAMP];
        int32_t key_no = 0;
        if (f[MQ_F_UNIQ_OFF] >= 0) {
            if (key_no >= first_key) {
                int32_t h = mq_java_hash_key(topic, topic_len, buf + f[MQ_F_UNIQ_OFF],
                                             (int32_t)f[MQ_F_UNIQ_LEN]);
                if (!index_put(index_base, slot_num, index_num, h, phy, ts)) {
                    resume[0] = i;
                    resume[1] = key_no;
                    return 0;
                }
            }
        }
        key_no = 1;
        if (f[MQ_F_KEYS_OFF] >= 0) {
            const char *k = buf + f[MQ_F_KEYS_OFF];
            int64_t len = f[MQ_F_KEYS_LEN];
            int64_t start = 0;
            while (start < len) {
                const char *sp = memchr(k + start, ' ', (size_t)(len - start));
                int64_t end = sp ? sp - k : len;
                if (end > start) {
                    if (key_no >= first_key) {
                        int32_t h = mq_java_hash_key(topic, topic_len, k + start,
                                                     (int32_t)(end - start));
                        if (!index_put(index_base, slot_num, index_num, h, phy, ts)) {
                            resume[0] = i;
                            resume[1] = key_no;
                            return 0;
                        }
                    }
                    key_no++;
                }
                start = end + 1;
            }
        }
    }
    resume[0] = count;
    resume[1] = 0;
    return 1;
}

/* ---------------------------------------------------------------- mapped memory */

/* One past the last non-zero byte in [from, to), or `from` when all are zero. */
int64_t mq_last_nonzero(const char *base, int64_t from, int64_t to) {
    int64_t i = to;
    while (i > from && (i & 7))
        if (base[--i])
            return i + 1;
    while (i - 8 >= from) {
        uint64_t word;
        memcpy(&word, base + i - 8, 8);
        if (word)
            break;
        i -= 8;
    }
    while (i > from)
        if (base[--i])
            return i + 1;
    return from;
}

/* Zeroes [from, to): used to wipe the stale tail left by a truncation. */
void mq_zero(char *base, int64_t from, int64_t to) {
    if (to > from)
        memset(base + from, 0, (size_t)(to - from));
}

/* msync(MS_SYNC) of [from, to) of a mapping; from is rounded down to a page. */
int32_t mq_msync(char *base, int64_t from, int64_t to) {
    long page = sysconf(_SC_PAGESIZE);
    if (from < 0 || to < from)
        return -EINVAL;
    int64_t start = from - (from % page);
    if (to == start)
        return 0;
    if (msync(base + start, (size_t)(to - start), MS_SYNC) != 0)
        return -errno;
    return 0;
}

/*
 * Writes a zero byte into every page of [from, to), so the kernel maps them writable
 * before the writer arrives (RocketMQ's warm-up). Only for a file nobody writes yet.
 */
int64_t mq_touch_pages(char *base, int64_t from, int64_t to, int64_t page_size) {
    volatile char *p = (volatile char *)base;
    int64_t n = 0;
    if (page_size <= 0)
        return -1;
    for (int64_t i = from; i < to; i += page_size, n++)
        p[i] = 0;
    return n;
}

/* The raw floor for benchmarks: copies pre-encoded bytes into a mapped file. */
int64_t mq_copy(char *file_base, int64_t pos, int64_t file_size, const char *src,
                int64_t len) {
    if (pos < 0 || len < 0 || len > file_size - pos)
        return MQ_ENC_NOSPACE;
    memcpy(file_base + pos, src, (size_t)len);
    return len;
}
