/* The packet scan of rawrows.py in C: the same function as rawrows.scan_py, result for result (the tests compare
 * the two on every packet layout, cut at every byte). Built by setup.py as an optional extension: where no C
 * compiler is at hand the pure-Python scan is used, and `rawrows.ACCELERATED` says which one runs.
 *
 * scan(buf: bytes, pos: int) -> (rows, ends, total, special, pos, status)
 *   Reads whole MySQL protocol packets of a two-column text result (a row's SQL text, then its checksum as
 *   exactly 10 decimal digits) from buf[pos:], and stops at the first packet that is not complete or not a row.
 *   rows:    each row's first column (bytes, or None for NULL), in order
 *   ends:    cumulative sizes, len(row) + 1 per row (what dump.dump_rows cuts statements by)
 *   total:   the sum of the rows' 10-digit numbers
 *   special: True when a row is NULL or starts with '!' (dump.dump_rows then looks at each row)
 *   pos:     where the scan stopped: the start of the packet it did not take, or just after the EOF packet
 *   status:  0 more data needed, 1 end of the result (EOF packet taken), 2 an error packet starts at pos,
 *            3 a packet of 16 MiB (a row split over packets), 4 a packet that is not a row of this layout
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define MAX_PACKET 0xFFFFFF
#define SUM_DIGITS 10

enum { MORE = 0, END = 1, ERROR = 2, SPLIT = 3, BAD = 4 };

static PyObject *
scan(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "scan(buf: bytes, pos: int)");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred())
        return NULL;
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    const Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    if (pos < 0 || pos > n) {
        PyErr_SetString(PyExc_ValueError, "pos is outside buf");
        return NULL;
    }
    PyObject *rows = PyList_New(0);
    PyObject *ends = PyList_New(0);
    if (rows == NULL || ends == NULL)
        goto fail;
    int64_t total = 0; /* signed, as Python's sum: a malformed digit counts as its byte minus '0' */
    Py_ssize_t cumulative = 0;
    int special = 0;
    int status = MORE;

    while (pos + 4 <= n) {
        const Py_ssize_t length = (Py_ssize_t)buf[pos] | (Py_ssize_t)buf[pos + 1] << 8
                                  | (Py_ssize_t)buf[pos + 2] << 16;
        const Py_ssize_t end = pos + 4 + length;
        if (end > n)
            break;
        if (length == 0) {
            status = BAD;
            break;
        }
        const unsigned first = buf[pos + 4];
        Py_ssize_t start, stop;
        if (first < 0xFB && (Py_ssize_t)first + 12 == length) {
            start = pos + 5;
            stop = end - 11;
        }
        else if (first == 0xFB && length == 12) {
            start = stop = -1; /* NULL */
        }
        else if (first == 0xFE && length < 9) {
            pos = end;
            status = END;
            break;
        }
        else if (first == 0xFF) {
            status = ERROR;
            break;
        }
        else if (length == MAX_PACKET) {
            status = SPLIT;
            break;
        }
        else {
            const int prefix = first == 0xFC ? 3 : first == 0xFD ? 4 : first == 0xFE ? 9 : 0;
            if (prefix == 0 || length < prefix + 11 || buf[end - 11] != SUM_DIGITS) {
                status = BAD;
                break;
            }
            uint64_t declared = 0;
            for (int k = prefix - 1; k >= 1; k--)
                declared = declared << 8 | buf[pos + 4 + k];
            if (declared != (uint64_t)(length - 11 - prefix)) {
                status = BAD;
                break;
            }
            start = pos + 4 + prefix;
            stop = end - 11;
        }
        PyObject *row;
        if (start < 0) {
            row = Py_NewRef(Py_None);
            special = 1;
            cumulative += 1;
        }
        else {
            row = PyBytes_FromStringAndSize((const char *)buf + start, stop - start);
            if (row == NULL)
                goto fail;
            if (stop > start && buf[start] == '!')
                special = 1;
            cumulative += stop - start + 1;
        }
        int appended = PyList_Append(rows, row);
        Py_DECREF(row);
        if (appended < 0)
            goto fail;
        PyObject *cut = PyLong_FromSsize_t(cumulative);
        if (cut == NULL)
            goto fail;
        appended = PyList_Append(ends, cut);
        Py_DECREF(cut);
        if (appended < 0)
            goto fail;
        int64_t number = 0;
        for (Py_ssize_t k = end - SUM_DIGITS; k < end; k++)
            number = number * 10 + ((int64_t)buf[k] - '0');
        total += number;
        pos = end;
    }
    return Py_BuildValue("(NNNNni)", rows, ends, PyLong_FromLongLong(total), PyBool_FromLong(special),
                         pos, status);

fail:
    Py_XDECREF(rows);
    Py_XDECREF(ends);
    return NULL;
}

static PyMethodDef methods[] = {
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL,
     "scan(buf, pos) -> (rows, ends, total, special, pos, status): see rusing_ops/backups/rawrows.py"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rowscan", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__rowscan(void)
{
    return PyModule_Create(&module);
}
