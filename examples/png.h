/* png.h - a tiny RGB canvas and PNG writer for the examples (no zlib).

   The image is 8-bit RGB, written as one IDAT chunk holding a zlib stream
   of stored (uncompressed) deflate blocks, with its CRC-32 and Adler-32.
   Drawing: pixels, Bresenham lines (optionally dashed), filled rectangles
   and text in a built-in 5x7 bitmap font (digits, letters, space and the
   printable ASCII punctuation; lower case is drawn as upper case).

     png_img im;
     if (png_init(&im, 320, 200) == 0) {
         png_line(&im, 10, 10, 300, 150, 0xff0000, 0);
         png_text(&im, 20, 170, "CE 1.25", 2, 0x000000);
         png_save(&im, "out.png");      (0 on success)
         png_free(&im);
     }
*/
#ifndef EXAMPLES_PNG_H
#define EXAMPLES_PNG_H

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { int w, h; unsigned char *px; } png_img;   /* px[h][w][3] */

/* white canvas; 0 on success, -1 if out of memory */
static int png_init(png_img *im, int w, int h)
{
    im->w = w; im->h = h;
    im->px = malloc((size_t)w * h * 3);
    if (!im->px) return -1;
    memset(im->px, 255, (size_t)w * h * 3);
    return 0;
}

static void png_free(png_img *im) { free(im->px); im->px = NULL; }

static void png_px(png_img *im, int x, int y, unsigned long rgb)
{
    if (x < 0 || y < 0 || x >= im->w || y >= im->h) return;
    unsigned char *p = im->px + ((size_t)y * im->w + x) * 3;
    p[0] = (unsigned char)(rgb >> 16); p[1] = (unsigned char)(rgb >> 8); p[2] = (unsigned char)rgb;
}

static void png_rect(png_img *im, int x0, int y0, int x1, int y1, unsigned long rgb)
{
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) png_px(im, x, y, rgb);
}

/* Bresenham from (x0,y0) to (x1,y1); dash > 0: dash pixels on, dash off */
static void png_line(png_img *im, int x0, int y0, int x1, int y1, unsigned long rgb, int dash)
{
    int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    int err = dx + dy;
    for (int n = 0;; n++) {
        if (dash <= 0 || (n / dash) % 2 == 0) png_px(im, x0, y0, rgb);
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * err;
        if (e2 >= dy) { err += dy; x0 += sx; }
        if (e2 <= dx) { err += dx; y0 += sy; }
    }
}

/* 5x7 glyphs, one byte per row, bit 4 = leftmost column */
static const char png__chars[] = "0123456789.-+()=/ABCDEFGHIKLMNOPRSTUVWXYJQZ:,!?'\";_<>[]*#%&@$\\|~^`{}";
static const unsigned char png__font[][7] = {
    {14,17,19,21,25,17,14}, {4,12,4,4,4,4,14}, {14,17,1,2,4,8,31}, {31,2,4,2,1,17,14},
    {2,6,10,18,31,2,2}, {31,16,30,1,1,17,14}, {6,8,16,30,17,17,14}, {31,1,2,4,8,8,8},
    {14,17,17,14,17,17,14}, {14,17,17,15,1,2,12}, {0,0,0,0,0,12,12}, {0,0,0,31,0,0,0},
    {0,4,4,31,4,4,0}, {2,4,8,8,8,4,2}, {8,4,2,2,2,4,8}, {0,0,31,0,31,0,0}, {1,1,2,4,8,16,16},
    {14,17,17,31,17,17,17}, {30,17,17,30,17,17,30}, {14,17,16,16,16,17,14}, {28,18,17,17,17,18,28},
    {31,16,16,30,16,16,31}, {31,16,16,30,16,16,16}, {14,17,16,23,17,17,15}, {17,17,17,31,17,17,17},
    {14,4,4,4,4,4,14}, {17,18,20,24,20,18,17}, {16,16,16,16,16,16,31}, {17,27,21,21,17,17,17},
    {17,17,25,21,19,17,17}, {14,17,17,17,17,17,14}, {30,17,17,30,16,16,16}, {30,17,17,30,20,18,17},
    {15,16,16,14,1,1,30}, {31,4,4,4,4,4,4}, {17,17,17,17,17,17,14}, {17,17,17,17,17,10,4},
    {17,17,17,21,21,21,10}, {17,17,10,4,10,17,17}, {17,17,10,4,4,4,4},
    /* J Q Z : , ! ? ' " ; _ < > [ ] * # % & @ $ \ | ~ ^ ` { } */
    {7,2,2,2,2,18,12}, {14,17,17,17,21,18,13}, {31,1,2,4,8,16,31}, {0,12,12,0,12,12,0},
    {0,0,0,0,12,4,8}, {4,4,4,4,4,0,4}, {14,17,1,2,4,0,4}, {4,4,8,0,0,0,0}, {10,10,0,0,0,0,0},
    {0,12,12,0,12,4,8}, {0,0,0,0,0,0,31}, {2,4,8,16,8,4,2}, {8,4,2,1,2,4,8}, {14,8,8,8,8,8,14},
    {14,2,2,2,2,2,14}, {0,4,21,14,21,4,0}, {10,10,31,10,31,10,10}, {24,25,2,4,8,19,3},
    {12,18,20,8,21,18,13}, {14,17,1,13,21,21,14}, {4,15,20,14,5,30,4}, {16,16,8,4,2,1,1},
    {4,4,4,4,4,4,4}, {0,0,8,21,2,0,0}, {4,10,17,0,0,0,0}, {8,4,2,0,0,0,0}, {2,4,4,8,4,4,2},
    {8,4,4,2,4,4,8},
};

/* a pixel coordinate from a double: rounded, clamped to +-1e6 (drawing
 * clips), a NaN far off the canvas; never an out-of-range conversion */
static int png_coord(double v)
{
    return v > -1e6 ? (v < 1e6 ? (int)floor(v + 0.5) : 1000000) : -1000000;
}

static int png_text_w(const char *s, int scale) { return (int)strlen(s) * 6 * scale; }

/* text with its top-left corner at (x, y), each font pixel scale x scale */
static void png_text(png_img *im, int x, int y, const char *s, int scale, unsigned long rgb)
{
    for (; *s; s++, x += 6 * scale) {
        const char *c = strchr(png__chars, toupper((unsigned char)*s));
        if (!c) continue;
        const unsigned char *g = png__font[c - png__chars];
        for (int r = 0; r < 7; r++)
            for (int col = 0; col < 5; col++)
                if (g[r] >> (4 - col) & 1)
                    png_rect(im, x + col * scale, y + r * scale, x + col * scale + scale - 1,
                             y + r * scale + scale - 1, rgb);
    }
}

static unsigned long png__crc(unsigned long crc, const unsigned char *p, size_t n)
{
    crc = ~crc & 0xffffffffUL;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xedb88320UL & (0UL - (crc & 1)));
    }
    return ~crc & 0xffffffffUL;
}

static void png__be32(unsigned char *p, unsigned long v)
{
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}

static int png__chunk(FILE *f, const char *type, const unsigned char *d, size_t n)
{
    unsigned char hdr[8], tail[4];
    png__be32(hdr, (unsigned long)n);
    memcpy(hdr + 4, type, 4);
    png__be32(tail, png__crc(png__crc(0, hdr + 4, 4), d, n));
    return fwrite(hdr, 1, 8, f) == 8 && (n == 0 || fwrite(d, 1, n, f) == n) && fwrite(tail, 1, 4, f) == 4;
}

/* 0 on success, -1 on failure (out of memory or i/o) */
static int png_save(const png_img *im, const char *path)
{
    size_t row = (size_t)im->w * 3 + 1, raw_n = row * im->h, nblk = (raw_n + 65534) / 65535;
    unsigned char *raw = malloc(raw_n), *z = malloc(2 + raw_n + 5 * nblk + 4), ihdr[13];
    unsigned long a = 1, b = 0;
    size_t zn = 0;
    int ok = 0;
    FILE *f = NULL;
    if (!raw || !z) goto done;
    for (int y = 0; y < im->h; y++) {           /* filter type 0 (none) per row */
        raw[y * row] = 0;
        memcpy(raw + y * row + 1, im->px + (size_t)y * im->w * 3, row - 1);
    }
    z[zn++] = 0x78; z[zn++] = 0x01;             /* zlib header: deflate, 32K window */
    for (size_t off = 0; off < raw_n; off += 65535) {
        size_t len = raw_n - off < 65535 ? raw_n - off : 65535;
        z[zn++] = off + len == raw_n;           /* BFINAL, BTYPE 00 = stored */
        z[zn++] = (unsigned char)len; z[zn++] = (unsigned char)(len >> 8);
        z[zn++] = (unsigned char)~len; z[zn++] = (unsigned char)(~len >> 8);
        memcpy(z + zn, raw + off, len);
        zn += len;
    }
    for (size_t i = 0; i < raw_n; i++) { a = (a + raw[i]) % 65521; b = (b + a) % 65521; }
    png__be32(z + zn, b << 16 | a);
    zn += 4;
    png__be32(ihdr, (unsigned long)im->w);
    png__be32(ihdr + 4, (unsigned long)im->h);
    ihdr[8] = 8; ihdr[9] = 2; ihdr[10] = ihdr[11] = ihdr[12] = 0;   /* 8-bit RGB */
    if (!(f = fopen(path, "wb"))) goto done;
    ok = fwrite("\x89PNG\r\n\x1a\n", 1, 8, f) == 8 && png__chunk(f, "IHDR", ihdr, 13) &&
         png__chunk(f, "IDAT", z, zn) && png__chunk(f, "IEND", NULL, 0);
    if (fclose(f) != 0) ok = 0;
done:
    free(raw);
    free(z);
    return ok ? 0 : -1;
}

#endif /* EXAMPLES_PNG_H */
