/* The backups' hot loops in C, built by setup.py as an optional extension: where no C compiler is at hand the
 * pure-Python code runs instead (the server writing the literals), and `rawrows.ACCELERATED` says which runs. The
 * tests hold each function to its pure-Python or server reference (rusing_ops_tests/backups/test_speedups.py).
 *
 * The backup's row reader (rawrows.py): two functions over the MySQL protocol packets of a text result whose last
 * column is each row's checksum as exactly 10 decimal digits.
 *
 * scan(buf: bytes, pos: int) -> (rows, ends, total, special, pos, status)
 *   rawrows.scan_py, result for result: a two-column result (a row's SQL text, then its checksum).
 * render(buf: bytes, pos: int, kinds: bytes) -> the same
 *   A result of one column per value, then the checksum: each row's SQL tuple "(v1,v2,...)" is written here, byte
 *   for byte the text schema.Table.row_expression has the server write. kinds, one byte per value column: 'q' a text
 *   written as QUOTE() does (backslash, quote, NUL and Ctrl-Z escaped), 'x' bytes as X'..' (upper-case hex), 'r' a
 *   literal the server wrote (Column.sql_text), copied; a NULL value is NULL, except in an 'r' column, whose NULL
 *   means the server could not write the value: the row is then None, as in scan(). 'm', first only: the large-row
 *   marker column; a value there ('!' and the row's key) is the row, and its other values are not written.
 *
 * Both read whole packets from buf[pos:] and stop at the first that is not complete or not a row:
 *   rows:    each row (bytes, or None), in order
 *   ends:    cumulative sizes, len(row) + 1 per row, 1 for None (what dump.dump_rows cuts statements by)
 *   total:   the sum of the rows' 10-digit numbers
 *   special: True when a row is None or starts with '!' (dump.dump_rows then looks at each row)
 *   pos:     where the scan stopped: the start of the packet it did not take, or just after the EOF packet
 *   status:  0 more data needed, 1 end of the result (EOF packet taken), 2 an error packet starts at pos,
 *            3 a packet of 16 MiB (a row split over packets), 4 a packet that is not a row of this layout
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_PACKET 0xFFFFFF
#define SUM_DIGITS 10

enum { MORE = 0, END = 1, ERROR = 2, SPLIT = 3, BAD = 4 };

/* outside(values: bytes) -> (rest, closed): the restore's check of an INSERT's values (confine.py), below. */

/* What one function does with a row packet (payload buf[start:end], its checksum the last 11 bytes). */
typedef struct {
    const char *kinds; /* render only */
    Py_ssize_t columns;
    char *out;         /* render's scratch buffer */
    Py_ssize_t room;
} Reader;

/* A row packet's row: a new reference (bytes or None), or NULL with *status set (BAD) or an exception (status
 * left MORE). */
typedef PyObject *(*RowFunction)(Reader *reader, const unsigned char *buf, Py_ssize_t start, Py_ssize_t end,
                                 int *status);

/* What the packet at pos is: -1 a row packet (its end in *end), or why reading stops there: MORE (incomplete), END
 * (the EOF packet: *end is past it), ERROR (an error packet), SPLIT (16 MiB: a row over packets), BAD (empty). */
static int
packet(const unsigned char *buf, Py_ssize_t n, Py_ssize_t pos, Py_ssize_t *end)
{
    if (pos + 4 > n)
        return MORE;
    const Py_ssize_t length = (Py_ssize_t)buf[pos] | (Py_ssize_t)buf[pos + 1] << 8 | (Py_ssize_t)buf[pos + 2] << 16;
    *end = pos + 4 + length;
    if (*end > n)
        return MORE;
    if (length == 0)
        return BAD;
    const unsigned first = buf[pos + 4];
    if (first == 0xFE && length < 9)
        return END;
    if (first == 0xFF)
        return ERROR;
    if (length == MAX_PACKET)
        return SPLIT;
    return -1;
}

/* The row's checksum: the 10 digits that end its packet. Signed, as Python's sum: a malformed digit counts as its
 * byte minus '0'. */
static int64_t
checksum_at(const unsigned char *buf, Py_ssize_t end)
{
    int64_t number = 0;
    for (Py_ssize_t k = end - SUM_DIGITS; k < end; k++)
        number = number * 10 + ((int64_t)buf[k] - '0');
    return number;
}

/* Append row (a new reference, handed over) to rows and the cumulative size to ends; -1 with an exception set. */
static int
take(PyObject *rows, PyObject *ends, PyObject *row, Py_ssize_t cumulative)
{
    int appended = PyList_Append(rows, row);
    Py_DECREF(row);
    if (appended < 0)
        return -1;
    PyObject *cut = PyLong_FromSsize_t(cumulative);
    if (cut == NULL)
        return -1;
    appended = PyList_Append(ends, cut);
    Py_DECREF(cut);
    return appended;
}

/* The loop both functions share: packets from buf[pos:], each row packet's row by row_of. */
static PyObject *
read_rows(PyObject *data, PyObject *position, RowFunction row_of, Reader *reader)
{
    Py_ssize_t pos = PyLong_AsSsize_t(position);
    if (pos == -1 && PyErr_Occurred())
        return NULL;
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(data);
    const Py_ssize_t n = PyBytes_GET_SIZE(data);
    if (pos < 0 || pos > n) {
        PyErr_SetString(PyExc_ValueError, "pos is outside buf");
        return NULL;
    }
    PyObject *rows = PyList_New(0);
    PyObject *ends = PyList_New(0);
    if (rows == NULL || ends == NULL)
        goto fail;
    int64_t total = 0;
    Py_ssize_t cumulative = 0;
    int special = 0;
    int status;
    for (;;) {
        Py_ssize_t end;
        status = packet(buf, n, pos, &end);
        if (status >= 0) {
            if (status == END)
                pos = end;
            break;
        }
        status = MORE;
        PyObject *row = row_of(reader, buf, pos + 4, end, &status);
        if (row == NULL) {
            if (status == MORE)
                goto fail; /* an exception */
            break;
        }
        if (row == Py_None) {
            special = 1;
            cumulative += 1;
        }
        else {
            const Py_ssize_t size = PyBytes_GET_SIZE(row);
            if (size && PyBytes_AS_STRING(row)[0] == '!')
                special = 1;
            cumulative += size + 1;
        }
        if (take(rows, ends, row, cumulative) < 0)
            goto fail;
        total += checksum_at(buf, end);
        pos = end;
    }
    return Py_BuildValue("(NNNNni)", rows, ends, PyLong_FromLongLong(total), PyBool_FromLong(special),
                         pos, status);
fail:
    Py_XDECREF(rows);
    Py_XDECREF(ends);
    return NULL;
}

/* scan(): the packet holds the row's text, then the checksum. */
static PyObject *
scan_row(Reader *reader, const unsigned char *buf, Py_ssize_t start, Py_ssize_t end, int *status)
{
    (void)reader;
    const Py_ssize_t length = end - start;
    const unsigned first = buf[start];
    if (first < 0xFB && (Py_ssize_t)first + 12 == length)
        return PyBytes_FromStringAndSize((const char *)buf + start + 1, (Py_ssize_t)first);
    if (first == 0xFB && length == 12)
        return Py_NewRef(Py_None);
    const int prefix = first == 0xFC ? 3 : first == 0xFD ? 4 : first == 0xFE ? 9 : 0;
    if (prefix == 0 || length < prefix + 11 || buf[end - 11] != SUM_DIGITS) {
        *status = BAD;
        return NULL;
    }
    uint64_t declared = 0;
    for (int k = prefix - 1; k >= 1; k--)
        declared = declared << 8 | buf[start + k];
    if (declared != (uint64_t)(length - 11 - prefix)) {
        *status = BAD;
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)buf + start + prefix, length - 11 - prefix);
}

static PyObject *
scan(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "scan(buf: bytes, pos: int)");
        return NULL;
    }
    Reader reader = {NULL, 0, NULL, 0};
    return read_rows(args[0], args[1], scan_row, &reader);
}

/* render()'s scratch buffer holds at least need bytes; -1 with an exception set. */
static int
reserve(Reader *reader, Py_ssize_t need)
{
    if (need <= reader->room)
        return 0;
    Py_ssize_t room = reader->room ? reader->room : 4096;
    while (room < need)
        room *= 2;
    char *grown = PyMem_Realloc(reader->out, (size_t)room);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    reader->out = grown;
    reader->room = room;
    return 0;
}

/* One length-encoded value at buf[*at], inside the values ending at end: 1 and its bounds, 0 NULL, -1 malformed. */
static int
value(const unsigned char *buf, Py_ssize_t *at, Py_ssize_t end, Py_ssize_t *start, Py_ssize_t *stop)
{
    const Py_ssize_t p = *at;
    if (p >= end)
        return -1;
    const unsigned first = buf[p];
    uint64_t n;
    int prefix;
    if (first < 0xFB) {
        n = first;
        prefix = 1;
    }
    else if (first == 0xFB) {
        *at = p + 1;
        return 0;
    }
    else if (first == 0xFF) {
        return -1;
    }
    else {
        prefix = first == 0xFC ? 3 : first == 0xFD ? 4 : 9;
        if (p + prefix > end)
            return -1;
        n = 0;
        for (int k = prefix - 1; k >= 1; k--)
            n = n << 8 | buf[p + k];
    }
    if (n > (uint64_t)(end - p - prefix))
        return -1;
    *start = p + prefix;
    *stop = *start + (Py_ssize_t)n;
    *at = *stop;
    return 1;
}

/* What QUOTE() writes after a backslash for each byte it escapes (0: the byte is copied as it is). */
static const unsigned char ESCAPE[256] = {[0] = '0', ['\''] = '\'', ['\\'] = '\\', [26] = 'Z'};
static char HEX_PAIRS[512]; /* "000102..FF": filled once at import */

/* render(): the packet holds one value per kind, then the checksum. */
static PyObject *
render_row(Reader *reader, const unsigned char *buf, Py_ssize_t start, Py_ssize_t end, int *status)
{
    const Py_ssize_t length = end - start;
    if (length < SUM_DIGITS + 1 + reader->columns || buf[end - 11] != SUM_DIGITS) {
        *status = BAD;
        return NULL;
    }
    const Py_ssize_t values_end = end - 11;
    const char *kinds = reader->kinds;
    const Py_ssize_t first_value = kinds[0] == 'm' ? 1 : 0;
    Py_ssize_t at = start, used = 0, from = 0, to = 0;
    int whole = 1; /* 1 the tuple is written, 0 the row is None, 2 the row is the marker buf[marker:marker_end] */
    Py_ssize_t marker = 0, marker_end = 0;
    if (reserve(reader, 16) < 0)
        return NULL;
    reader->out[used++] = '(';
    for (Py_ssize_t c = 0; c < reader->columns; c++) {
        const int got = value(buf, &at, values_end, &from, &to);
        if (got < 0) {
            *status = BAD;
            return NULL;
        }
        const char kind = kinds[c];
        if (kind == 'm') {
            if (got) {
                whole = 2;
                marker = from;
                marker_end = to;
            }
            continue;
        }
        if (whole != 1)
            continue; /* the row is the marker, or None: its other values are not written */
        if (!got && kind == 'r') {
            whole = 0;
            continue;
        }
        const Py_ssize_t len = to - from;
        if (reserve(reader, used + 2 * len + 8) < 0)
            return NULL;
        char *w = reader->out + used;
        if (c > first_value)
            *w++ = ',';
        if (!got) {
            memcpy(w, "NULL", 4);
            w += 4;
        }
        else if (kind == 'r') {
            memcpy(w, buf + from, (size_t)len);
            w += len;
        }
        else if (kind == 'x') {
            *w++ = 'X';
            *w++ = '\'';
            for (Py_ssize_t k = from; k < to; k++, w += 2)
                memcpy(w, HEX_PAIRS + 2 * buf[k], 2);
            *w++ = '\'';
        }
        else {
            *w++ = '\'';
            Py_ssize_t k = from;
            while (k < to) {
                Py_ssize_t run = k;
                while (run < to && !ESCAPE[buf[run]])
                    run++;
                memcpy(w, buf + k, (size_t)(run - k)); /* the bytes up to the next one to escape, at once */
                w += run - k;
                if (run == to)
                    break;
                *w++ = '\\';
                *w++ = (char)ESCAPE[buf[run]];
                k = run + 1;
            }
            *w++ = '\'';
        }
        used = w - reader->out;
    }
    if (at != values_end) {
        *status = BAD;
        return NULL;
    }
    if (whole == 2)
        return PyBytes_FromStringAndSize((const char *)buf + marker, marker_end - marker);
    if (whole == 0)
        return Py_NewRef(Py_None);
    reader->out[used++] = ')'; /* room: reserved with the last value, or the 16 bytes of a row of none */
    return PyBytes_FromStringAndSize(reader->out, used);
}

static PyObject *
render(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 3 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "render(buf: bytes, pos: int, kinds: bytes)");
        return NULL;
    }
    Reader reader = {PyBytes_AS_STRING(args[2]), PyBytes_GET_SIZE(args[2]), NULL, 0};
    for (Py_ssize_t c = 0; c < reader.columns; c++) {
        const char kind = reader.kinds[c];
        if (!(kind == 'q' || kind == 'x' || kind == 'r' || (kind == 'm' && c == 0))) {
            PyErr_SetString(PyExc_ValueError, "kinds: one of q, x, r per column ('m' first only)");
            return NULL;
        }
    }
    if (reader.columns == 0) {
        PyErr_SetString(PyExc_ValueError, "kinds: one per value column, at least one");
        return NULL;
    }
    PyObject *result = read_rows(args[0], args[1], render_row, &reader);
    PyMem_Free(reader.out);
    return result;
}

/* outside(values: bytes) -> (rest: bytes, closed: bool), for confine.py's check of an INSERT's values: the text
 * that lies outside the string literals, as `re.sub(rb"\\.", b"\\", values).split(b"'")[::2]` joined gives it
 * (each escape, a backslash and the byte after it, first becomes a lone backslash, wherever it is: an escaped quote
 * never opens or closes a literal, and a backslash outside a literal stays in rest, where the check refuses it),
 * and whether the quotes pair up (an even number of them). */
static PyObject *
outside(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 1 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "outside(values: bytes)");
        return NULL;
    }
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    const Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    PyObject *rest = PyBytes_FromStringAndSize(NULL, n);
    if (rest == NULL)
        return NULL;
    char *w = PyBytes_AS_STRING(rest);
    int in_literal = 0;
    Py_ssize_t quotes = 0, k = 0;
    while (k < n) {
        if (in_literal) { /* to the next quote or backslash at once */
            const unsigned char *q = memchr(buf + k, '\'', (size_t)(n - k));
            const unsigned char *b = memchr(buf + k, '\\', (size_t)((q ? q - buf : n) - k));
            if (b != NULL) {
                k = b - buf + 2; /* the escape and the byte it escapes */
                continue;
            }
            if (q == NULL)
                break;
            k = q - buf + 1;
            quotes++;
            in_literal = 0;
            continue;
        }
        const unsigned char c = buf[k];
        if (c == '\'') {
            quotes++;
            in_literal = 1;
            k++;
        }
        else if (c == '\\') {
            *w++ = '\\';
            k += 2;
        }
        else {
            *w++ = (char)c;
            k++;
        }
    }
    if (_PyBytes_Resize(&rest, w - PyBytes_AS_STRING(rest)) < 0)
        return NULL;
    return Py_BuildValue("(NN)", rest, PyBool_FromLong(quotes % 2 == 0));
}

static PyMethodDef methods[] = {
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL,
     "scan(buf, pos) -> (rows, ends, total, special, pos, status): see rusing_ops/backups/rawrows.py"},
    {"render", (PyCFunction)(void (*)(void))render, METH_FASTCALL,
     "render(buf, pos, kinds) -> (rows, ends, total, special, pos, status): see rusing_ops/backups/rawrows.py"},
    {"outside", (PyCFunction)(void (*)(void))outside, METH_FASTCALL,
     "outside(values) -> (rest, closed): see rusing_ops/backups/confine.py"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speedups", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    static const char digits[] = "0123456789ABCDEF";
    for (int b = 0; b < 256; b++) {
        HEX_PAIRS[2 * b] = digits[b >> 4];
        HEX_PAIRS[2 * b + 1] = digits[b & 15];
    }
    return PyModule_Create(&module);
}
