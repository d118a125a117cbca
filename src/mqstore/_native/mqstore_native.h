/*
 * mqstore native core: the per-byte work of a RocketMQ-format message store.
 *
 * This header is read twice: by the C compiler, and by cffi's cdef (which is why it
 * holds only plain declarations, no macros with expressions and no includes).
 * The record layout is summarised at the top of mqstore_native.c.
 */

/* Number of int64 slots per record in the output of mq_scan(). */
#define MQ_FIELDS 28

/* Field indices inside one record's slots of mq_scan() output. */
#define MQ_F_POS 0
#define MQ_F_TOTAL_SIZE 1
#define MQ_F_MAGIC 2
#define MQ_F_BODY_CRC 3
#define MQ_F_QUEUE_ID 4
#define MQ_F_FLAG 5
#define MQ_F_QUEUE_OFFSET 6
#define MQ_F_PHYSICAL_OFFSET 7
#define MQ_F_SYS_FLAG 8
#define MQ_F_BORN_TIMESTAMP 9
#define MQ_F_BORN_HOST_OFF 10
#define MQ_F_BORN_HOST_LEN 11
#define MQ_F_STORE_TIMESTAMP 12
#define MQ_F_STORE_HOST_OFF 13
#define MQ_F_STORE_HOST_LEN 14
#define MQ_F_RECONSUME_TIMES 15
#define MQ_F_PREPARED_OFFSET 16
#define MQ_F_BODY_OFF 17
#define MQ_F_BODY_LEN 18
#define MQ_F_TOPIC_OFF 19
#define MQ_F_TOPIC_LEN 20
#define MQ_F_PROPS_OFF 21
#define MQ_F_PROPS_LEN 22
#define MQ_F_TAGS_CODE 23
#define MQ_F_KEYS_OFF 24
#define MQ_F_KEYS_LEN 25
#define MQ_F_UNIQ_OFF 26
#define MQ_F_UNIQ_LEN 27

/* Flags for mq_scan(). */
#define MQ_SCAN_CHECK_CRC 1
#define MQ_SCAN_PROPERTIES 2

/* Why mq_scan() stopped (written to stop[1]); stop[0] is the position it stopped at. */
#define MQ_STOP_LIMIT 0
#define MQ_STOP_END 1
#define MQ_STOP_BLANK 2
#define MQ_STOP_ZERO 3
#define MQ_ERR_TRUNCATED 10
#define MQ_ERR_MAGIC 11
#define MQ_ERR_TOTAL_SIZE 12
#define MQ_ERR_FIELD_LENGTH 13
#define MQ_ERR_SIZE_MISMATCH 14
#define MQ_ERR_CRC 15
#define MQ_ERR_TORN 16
#define MQ_ERR_UNIT_SIZE 17

/* Negative results of the encoders. */
#define MQ_ENC_NOSPACE -1
#define MQ_ENC_TOOBIG -2
#define MQ_ENC_BADARG -3

int32_t mq_crc32(const char *data, int64_t len);
int32_t mq_java_hash_utf8(const char *data, int64_t len);
int32_t mq_java_hash_utf16le(const char *data, int64_t nbytes);

int64_t mq_record_size(int32_t body_len, int32_t topic_len, int32_t props_len,
                       int32_t born_host_len, int32_t store_host_len);

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
                         int32_t reconsume_times, int64_t prepared_offset);

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
                        int32_t reconsume_times, int32_t *out_sizes);

/*
 * What stays the same across appends to one CommitLog file: set by the CommitLog when
 * it rolls to a file (under its append lock), only read by mq_append.
 */
typedef struct {
    char *base;
    int64_t file_size;
    int64_t file_from_offset;
    char born_host[20];
    int32_t born_host_len;
    char store_host[20];
    int32_t store_host_len;
} mq_append_ctx;

int64_t mq_append(const mq_append_ctx *ctx, int64_t pos,
                  const char *body, int32_t body_len,
                  const char *topic, int32_t topic_len,
                  const char *props, int32_t props_len,
                  int32_t queue_id, int32_t flag, int64_t queue_offset,
                  int32_t sys_flag, int64_t born_timestamp, int64_t store_timestamp,
                  int32_t reconsume_times, int64_t prepared_offset);

int32_t mq_write_blank(char *file_base, int64_t pos, int64_t file_size);

int32_t mq_scan(const char *buf, int64_t buf_len, int64_t pos, int32_t max_records,
                int32_t flags, int64_t *out, int64_t *stop);

/* ---- ConsumeQueue (20-byte units: i64 CL offset, i32 size, i64 tag code) */

int32_t mq_queue_runs(const char *buf, const int64_t *fields, int32_t count,
                      int32_t *run_starts);
int32_t mq_cq_write_units(char *cq_base, int64_t pos, int64_t file_size,
                          const int64_t *fields, int32_t count);
int32_t mq_cq_write_blank_units(char *cq_base, int64_t pos, int64_t end);
int64_t mq_cq_valid_end(const char *cq_base, int64_t from, int64_t to, int64_t cl_limit);

/* ---- IndexFile (40-byte header, i32 hash slots, 20-byte entries) */

int32_t mq_java_hash_key(const char *topic, int32_t topic_len, const char *key,
                         int32_t key_len);
int32_t mq_index_add(char *index_base, int32_t slot_num, int32_t index_num,
                     const char *buf, const int64_t *fields, int32_t count,
                     int32_t *resume);

int32_t mq_decode_many(const char *buf, int64_t buf_len, const int64_t *positions,
                       int32_t count, int32_t flags, int64_t *out, int64_t *reasons);

/* ---- get(): choosing ConsumeQueue units, then checking the records they point at */

/* Slots of mq_pick_units' io array. */
#define MQ_PICK_BYTES 0
#define MQ_PICK_HAVE 1
#define MQ_PICK_SCANNED 2
#define MQ_PICK_FULL 3
#define MQ_PICK_MISS 4
#define MQ_PICK_DAMAGED 5
#define MQ_PICK_UNORDERED 6
#define MQ_PICK_IO 7

/* Miss reasons in io[MQ_PICK_MISS]. */
#define MQ_MISS_NONE 0
#define MQ_MISS_NO_MATCH 1
#define MQ_MISS_REMOVED 2

/* Slots per record in mq_locate_many's output. */
#define MQ_LOC_BODY_OFF 0
#define MQ_LOC_BODY_LEN 1
#define MQ_LOC_QUEUE_OFFSET 2
#define MQ_LOC_FIELDS 3

/* mq_locate_many's reason for a sound record whose QUEUEID or PHYSICALOFFSET is not
 * the one its unit implies (only in a damaged or hand-made store). */
#define MQ_LOC_UNUSUAL -1

int32_t mq_pick_units(const char *units, int32_t n_units, const int32_t *codes,
                      int32_t n_codes, int64_t cl_min, int64_t cl_max, int64_t byte_limit,
                      int32_t budget, int64_t *io, int64_t *picked, int64_t *damaged);
int32_t mq_locate_many(const char *buf, int64_t buf_len, int64_t file_from,
                       int32_t queue_id, const int64_t *picked, int32_t count,
                       int64_t *out, int64_t *reasons);

/* ---- `mqstore cat --format json`: one JSON line per record */

/* Slots of mq_json_lines' io array. */
#define MQ_JSON_NEXT 0
#define MQ_JSON_BYTES 1
#define MQ_JSON_FULL 2
#define MQ_JSON_IO 3

int32_t mq_json_lines(const char *buf, int64_t buf_len, const int64_t *fields, int32_t from,
                      int32_t count, int64_t base, int32_t queue_id, int64_t since,
                      const char *topic,
                      int32_t topic_len, int32_t limit, char *out, int64_t out_cap,
                      int64_t *io);

int64_t mq_last_nonzero(const char *base, int64_t from, int64_t to);
void mq_zero(char *base, int64_t from, int64_t to);

int32_t mq_msync(char *base, int64_t from, int64_t to);
int64_t mq_touch_pages(char *base, int64_t from, int64_t to, int64_t page_size);

int64_t mq_copy(char *file_base, int64_t pos, int64_t file_size,
                const char *src, int64_t len);
