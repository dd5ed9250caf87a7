/*
 * fuzz_dict.h - every target loads its libFuzzer dictionary by itself.
 *
 * tests/fuzz/<target>.dict lists the tokens of the target's input format
 * (JSON keywords, HTTP header names, frame header bytes, topic wildcards).
 * CMake passes its path as FUZZ_DICT; LLVMFuzzerInitialize(), which
 * libFuzzer calls before it reads its flags, adds -dict=FUZZ_DICT to them
 * unless a -dict= flag was given or the file is not there. So a plain
 * `fuzz_msg corpus seeds` run uses the dictionary, as does the fuzz stage
 * of tests/run.sh; `-dict=other.dict` replaces it.
 */
#ifndef WSBROKER_FUZZ_DICT_H
#define WSBROKER_FUZZ_DICT_H

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef FUZZ_DICT
#error "FUZZ_DICT must name the target's dictionary (tests/fuzz/CMakeLists.txt)"
#endif

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const char flag[] = "-dict=" FUZZ_DICT;
    for (int i = 1; i < *argc; i++) {
        if (strncmp((*argv)[i], "-dict=", 6) == 0)
            return 0;
    }
    if (access(FUZZ_DICT, R_OK) != 0)
        return 0;
    /* a new argv for the rest of the run; libFuzzer keeps pointers into it */
    char **v = calloc((size_t)*argc + 2, sizeof *v);
    if (v == NULL)
        return 0;
    memcpy(v, *argv, (size_t)*argc * sizeof *v);
    v[*argc] = (char *)flag;
    *argc += 1;
    *argv = v;
    return 0;
}

#endif
