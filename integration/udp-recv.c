/* udp-recv PORT: waits for one UDP datagram on 0.0.0.0:PORT and prints it. The busybox of the
 * test images has no UDP receiver; integration/network.sh builds this statically and binds it
 * into the container to check `-p HOST:CTR/udp`. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: udp-recv PORT\n"); return 2; }
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)atoi(argv[1]));
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0) { perror("udp-recv: bind"); return 1; }
    char buf[2048];
    ssize_t n = recv(s, buf, sizeof buf - 1, 0);
    if (n < 0) { perror("udp-recv: recv"); return 1; }
    fwrite(buf, 1, (size_t)n, stdout);
    return 0;
}
