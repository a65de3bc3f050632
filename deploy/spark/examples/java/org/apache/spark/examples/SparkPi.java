/*
 * kubeaccel's own SparkPi, for the image's /opt/spark/examples/jars/spark-examples.jar: the class and jar
 * that kubeflow's spark-pi.yaml names (Apache's Spark image carries one; ours is compiled by
 * deploy/spark/build_image.py against the image's own Spark jars).
 *
 * Monte-Carlo Pi: each of N slices (the first argument, default 2) throws SAMPLES_PER_SLICE points into the
 * unit square and counts those inside the quarter circle; Pi ~ 4 * inside / thrown.
 */
package org.apache.spark.examples;

import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import org.apache.spark.SparkConf;
import org.apache.spark.api.java.JavaSparkContext;

public final class SparkPi {
    static final long SAMPLES_PER_SLICE = 100_000L;

    private SparkPi() {
    }

    /** Points of one slice inside the quarter circle; seeded by the slice, so a rerun gives the same value. */
    static long insideOfSlice(int slice) {
        SplittableRandom random = new SplittableRandom(0x5EED_0000L + slice);
        long inside = 0;
        for (long i = 0; i < SAMPLES_PER_SLICE; i++) {
            double x = random.nextDouble();
            double y = random.nextDouble();
            if (x * x + y * y <= 1.0) {
                inside++;
            }
        }
        return inside;
    }

    static int slices(String[] args) {
        if (args.length == 0) {
            return 2;
        }
        try {
            int n = Integer.parseInt(args[0].trim());
            if (n > 0) {
                return n;
            }
        } catch (NumberFormatException e) {
            // fall through to the usage error below
        }
        System.err.println("SparkPi: the first argument is the number of slices, a positive integer; got '"
                + args[0] + "'");
        System.exit(2);
        return 0;
    }

    public static void main(String[] args) {
        int slices = slices(args);
        List<Integer> indices = new ArrayList<>(slices);
        for (int i = 0; i < slices; i++) {
            indices.add(i);
        }
        SparkConf conf = new SparkConf().setAppName("Spark Pi");
        try (JavaSparkContext spark = new JavaSparkContext(conf)) {
            long inside = spark.parallelize(indices, slices).map(SparkPi::insideOfSlice).reduce(Long::sum);
            double pi = 4.0 * inside / (SAMPLES_PER_SLICE * slices);
            System.out.println("Pi is roughly " + pi);
        }
    }
}
