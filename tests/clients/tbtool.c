/*
 * tbtool.c - broker helpers for the shell tests:
 *
 *   wsc-tbtool port             print a free loopback port
 *   wsc-tbtool wait PORT MS     exit 0 once GET /healthz on PORT answers
 *                               200, 1 if it does not within MS ms
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "port") == 0) {
        int port = it_free_port();
        if (port <= 0)
            return 1;
        printf("%d\n", port);
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "wait") == 0)
        return it_wait_healthy(atoi(argv[2]), atoi(argv[3])) ? 0 : 1;
    fprintf(stderr, "usage: wsc-tbtool port | wait PORT MS\n");
    return 2;
}
