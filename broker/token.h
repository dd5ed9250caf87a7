/*
 * token.h - `wsbroker token`: mint an HS256 JWT for the broker's
 * --auth-secret, so that authentication can be tried without other tools.
 */
#ifndef WSBROKER_TOKEN_H
#define WSBROKER_TOKEN_H

/* Run the subcommand (argv[0] is "token"). Returns the exit status. */
int token_main(int argc, char **argv);

#endif
